// Runs csrc/math/stochastic.h over the float32 values in a file, so that
// tests/test_stochastic_rounding.py can compare it bit for bit with
// fusedopt/_stochastic.py, and checks its Philox4x32-10 against torch's own
// (at::philox_engine, header-only) on the same elements.
// Usage: stochastic_check SEED STEP OFFSET IN OUT. IN holds float32 values;
// value k is element OFFSET + k. OUT gets the uint32 random word of each
// element, then its bf16 bits, then its fp16 bits (uint16 each).
// Exit status 1: a word differs from torch's Philox.
#include <ATen/core/PhiloxRNGEngine.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "math/stochastic.h"

namespace m = fusedopt::math;

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: stochastic_check SEED STEP OFFSET IN OUT\n");
    return 2;
  }
  const uint64_t seed = std::strtoull(argv[1], nullptr, 10);
  const uint64_t step = std::strtoull(argv[2], nullptr, 10);
  const uint64_t offset = std::strtoull(argv[3], nullptr, 10);
  std::FILE* in = std::fopen(argv[4], "rb");
  if (!in) return 2;
  std::vector<float> x;
  float v;
  while (std::fread(&v, sizeof v, 1, in) == 1) x.push_back(v);
  std::fclose(in);

  std::vector<uint32_t> words(x.size());
  std::vector<uint16_t> bf16(x.size()), fp16(x.size());
  long mismatches = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    const uint64_t index = offset + k;
    words[k] = m::sr_random_word(seed, step, index);
    // torch's engine: seed, subsequence = step, offset = the element's group
    at::philox_engine engine(seed, step, index >> 2);
    uint32_t want = 0;
    for (uint64_t j = 0; j <= (index & 3); ++j) want = engine();
    if (want != words[k] && mismatches++ < 5)
      std::printf("element %llu: word %08x, torch's Philox %08x\n", static_cast<unsigned long long>(index),
                  words[k], want);
    bf16[k] = m::sr_bf16_bits(x[k], words[k]);
    fp16[k] = m::sr_fp16_bits(x[k], words[k]);
  }
  std::FILE* out = std::fopen(argv[5], "wb");
  if (!out) return 2;
  std::fwrite(words.data(), sizeof(uint32_t), words.size(), out);
  std::fwrite(bf16.data(), sizeof(uint16_t), bf16.size(), out);
  std::fwrite(fp16.data(), sizeof(uint16_t), fp16.size(), out);
  if (std::fclose(out) != 0) return 2;
  std::printf("%zu elements, %ld words differ from torch's Philox\n", x.size(), mismatches);
  return mismatches == 0 ? 0 : 1;
}
