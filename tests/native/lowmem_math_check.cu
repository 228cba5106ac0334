// Compile check only (no GPU here): csrc/math/quant8.h and stochastic.h build
// as device code, with their __constant__ tables and CUDA intrinsics, under the
// library's nvcc flags. tests/test_lowmem_math_cuda_build.py compiles it.
#include "math/quant8.h"
#include "math/stochastic.h"

namespace m = fusedopt::math;

__global__ void quant8_blocks(const float* x, int n, uint8_t* codes, float* absmax, float* out) {
  const int start = blockIdx.x * m::kQuant8Block;
  const int count = n - start < m::kQuant8Block ? n - start : m::kQuant8Block;
  if (threadIdx.x == 0) {
    absmax[blockIdx.x] = m::quant8_quantize_block<true>(x + start, count, codes + start);
    m::quant8_dequantize_block<false>(codes + start, count, absmax[blockIdx.x], out + start);
  }
}

__global__ void stochastic_round(const float* x, int n, uint64_t seed, uint64_t step, uint16_t* bf16,
                                 uint16_t* fp16) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    const uint32_t r = m::sr_random_word(seed, step, static_cast<uint64_t>(i));
    bf16[i] = m::sr_bf16_bits(x[i], r);
    fp16[i] = m::sr_fp16_bits(x[i], r);
  }
}
