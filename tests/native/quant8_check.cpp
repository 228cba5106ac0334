// Runs csrc/math/quant8.h over the float32 values in a file, so that
// tests/test_quant8.py can compare them bit for bit with fusedopt/_quant8.py.
// Usage: quant8_check IN OUT. IN holds float32 values (native byte order); OUT
// gets, for the signed map and then the unsigned one: one uint8 code per value,
// one float32 absmax per block of 256 (the last block partial), and the
// dequantized float32 values. First it checks quant8_code_lookup against
// quant8_code (the definition) wherever either can change value: exit status 1
// if they differ anywhere.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
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

static float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// Both are step functions of n that only change at a threshold (the search) or
// also at a bucket edge (the lookup): agreeing on each such point and the float
// just below it, they agree everywhere. Random bit patterns and the specials on top.
template <bool kSigned>
static long check_lookup(long* points) {
  static m::Quant8Lookup<kSigned> lookup;
  m::quant8_build_lookup(lookup);
  if (!lookup.valid) {
    std::printf("lookup: a bucket holds more than %d thresholds\n", m::kQuant8PerBucket);
    return 1;
  }
  const float* t = m::quant8_thresholds<kSigned>();
  std::vector<float> at;
  for (int k = 0; k < 255; ++k) at.push_back(t[k]);
  for (int b = 0; b <= lookup.buckets; ++b) {
    const uint32_t key = (lookup.first_bucket + b) << m::Quant8Lookup<kSigned>::kShift;
    at.push_back(float_of(key >> 31 ? key & 0x7fffffffu : ~key));  // the float of that key
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                  -std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::max(),
                  -std::numeric_limits<float>::max(), 1e-45f, -1e-45f})
    at.push_back(v);
  std::mt19937 gen(8);
  for (int i = 0; i < 1000000; ++i) at.push_back(float_of(gen()));
  long failures = 0;
  for (float p : at) {
    for (float n : {p, std::nextafter(p, -inf)}) {
      ++*points;
      const int want = m::quant8_code(n, t), got = m::quant8_code_lookup(n, lookup);
      if (want != got && failures++ < 5) std::printf("lookup(%a) = %d, search %d\n", n, got, want);
    }
  }
  return failures;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: quant8_check IN OUT\n");
    return 2;
  }
  long points = 0;
  const long lookup_failures = check_lookup<true>(&points) + check_lookup<false>(&points);
  std::printf("lookup: %ld points, %ld differ from the search\n", points, lookup_failures);
  if (lookup_failures) return 1;
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
