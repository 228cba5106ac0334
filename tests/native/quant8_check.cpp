// Runs csrc/math/quant8.h over the float32 values in a file, so that
// tests/test_quant8.py can compare them bit for bit with fusedopt/_quant8.py.
// Usage: quant8_check IN OUT. IN holds float32 values (native byte order); OUT
// gets, for the signed map and then the unsigned one: one uint8 code per value,
// one float32 absmax per block of 256 (the last block partial), and the
// dequantized float32 values.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "math/quant8.h"

namespace m = fusedopt::math;

template <bool kSigned>
static void run(const std::vector<float>& x, std::FILE* out) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> codes(x.size());
  std::vector<float> absmax, deq(x.size());
  for (int64_t start = 0; start < n; start += m::kQuant8Block) {
    const int count = static_cast<int>(n - start < m::kQuant8Block ? n - start : m::kQuant8Block);
    const float a = m::quant8_quantize_block<kSigned>(&x[start], count, &codes[start]);
    m::quant8_dequantize_block<kSigned>(&codes[start], count, a, &deq[start]);
    absmax.push_back(a);
  }
  std::fwrite(codes.data(), 1, codes.size(), out);
  std::fwrite(absmax.data(), sizeof(float), absmax.size(), out);
  std::fwrite(deq.data(), sizeof(float), deq.size(), out);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: quant8_check IN OUT\n");
    return 2;
  }
  std::FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 2;
  std::vector<float> x;
  float v;
  while (std::fread(&v, sizeof v, 1, in) == 1) x.push_back(v);
  std::fclose(in);
  std::FILE* out = std::fopen(argv[2], "wb");
  if (!out) return 2;
  run<true>(x, out);
  run<false>(x, out);
  return std::fclose(out) == 0 ? 0 : 1;
}
