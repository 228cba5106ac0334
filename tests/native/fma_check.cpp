// Checks math::fma_by_round_to_odd, the fused multiply-add of CPU builds without
// an FMA instruction (csrc/math/common.h), against libm's fmaf, which C requires
// to round once. Built without -mfma, so fmaf here is the library's exact
// routine (or the instruction it selects at run time), never the emulation under
// test. Cases: random bit patterns over every exponent, near-cancellations,
// products that land exactly on a float rounding midpoint give or take a tiny c
// (where rounding to double first and then to float goes wrong), subnormal
// results, overflow, signed zeros, infinities and NaNs.
// Exit status 0 means every case agreed bit for bit (NaNs: both NaN).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include "math/common.h"

using fusedopt::math::fma_by_round_to_odd;

static uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

static float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

static long checked = 0, failures = 0;

static void check(float a, float b, float c) {
  ++checked;
  const float want = std::fmaf(a, b, c);
  const float got = fma_by_round_to_odd(a, b, c);
  const bool same = std::isnan(want) ? std::isnan(got) : bits_of(want) == bits_of(got);
  if (!same && failures++ < 10) std::printf("FAIL fma(%a, %a, %a): want %a, got %a\n", a, b, c, want, got);
}

int main() {
  std::mt19937 gen(12345);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_int_distribution<int> small_exp(-40, 40);
  std::normal_distribution<float> normal;

  // 1. random bit patterns: every exponent, subnormals, infinities and NaNs
  for (int i = 0; i < 2000000; ++i) check(float_of(any_bits(gen)), float_of(any_bits(gen)), float_of(any_bits(gen)));

  // 2. operands of optimizer-like magnitudes, and c close to -a*b (cancellation)
  for (int i = 0; i < 2000000; ++i) {
    const float a = std::ldexp(normal(gen), small_exp(gen));
    const float b = std::ldexp(normal(gen), small_exp(gen));
    const float c = (i % 2) ? std::ldexp(normal(gen), small_exp(gen)) : -(a * b) * (1.0f + std::ldexp(normal(gen), -20));
    check(a, b, c);
  }

  // 3. a*b exactly halfway between two floats, then nudged by a c far below the
  //    float's precision: the product (1 + x 2^-12)(1 + y 2^-12) has a bit at
  //    2^-24 (half an ulp of 1) for odd x*y, and c decides the tie's direction
  for (uint32_t x = 1; x < 4096; x += 2) {
    for (uint32_t y = 1; y < 64; y += 2) {
      const float a = 1.0f + std::ldexp(static_cast<float>(x), -12);
      const float b = 1.0f + std::ldexp(static_cast<float>(y), -12);
      for (int e = 30; e <= 120; e += 15) {
        const float tiny = std::ldexp(1.0f, -e);
        check(a, b, tiny);
        check(a, b, -tiny);
        check(-a, b, tiny);
        check(a, b, 0.0f);
      }
    }
  }

  // 4. results in the subnormal range and at the edge of overflow
  for (int i = 0; i < 200000; ++i) {
    const float a = std::ldexp(1.0f + std::ldexp(static_cast<float>(any_bits(gen) >> 9), -23), -70);
    const float b = std::ldexp(1.0f + std::ldexp(static_cast<float>(any_bits(gen) >> 9), -23), -64 - (i % 16));
    check(a, b, std::ldexp(normal(gen), -135));
    const float big = std::ldexp(1.0f + std::ldexp(static_cast<float>(any_bits(gen) >> 9), -23), 64);
    check(big, big, -std::ldexp(std::fabs(normal(gen)), 127));
    check(big, big, std::numeric_limits<float>::max());
  }

  // 5. signed zeros, exact cancellation, infinities, NaNs
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 3.0f, inf, -inf, nan, 1e-45f, -1e-45f,
                            std::numeric_limits<float>::max(), -std::numeric_limits<float>::max()};
  for (float a : specials)
    for (float b : specials)
      for (float c : specials) check(a, b, c);

  std::printf("%ld cases, %ld failures\n", checked, failures);
  return failures == 0 ? 0 : 1;
}
