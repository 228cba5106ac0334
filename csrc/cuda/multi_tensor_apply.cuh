// The multi-tensor-apply harness every CUDA kernel runs on.
//
// A launch covers up to kMaxTensors tensors and kMaxBlocks chunks of kChunk
// elements; one block per chunk. The table of pointers, sizes and the
// block -> (tensor, chunk) map is passed by value as the kernel argument: sm_70+
// with CUDA >= 12.1 allows 32 KiB of kernel parameters, enough for 256 tensors
// and 2048 chunks, so a launch needs no device-side metadata and no host
// allocation, which keeps it capturable in a CUDA graph.
//
// Offsets are 64-bit: a tensor may hold more than 2^31 elements.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../storage.h"
#include "chunk_table.h"

namespace fusedopt {
namespace cuda {

// ---------------------------------------------------------------- device side

// The chunk this block owns: base offset and length.
struct ChunkSpan {
  int tensor;
  int64_t start;
  int n;
};

template <int kLists, bool kOffsets, int kTensors>
__device__ __forceinline__ ChunkSpan chunk_span(const ChunkTable<kLists, kOffsets, kTensors>& table) {
  ChunkSpan s;
  s.tensor = table.block_tensor[blockIdx.x];
  s.start = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
  const int64_t left = table.numel[s.tensor] - s.start;
  s.n = left < kChunk ? static_cast<int>(left) : kChunk;
  return s;
}

// Conversions to and from float: exact widening, round-to-nearest-even narrowing:
// the same bits as the CPU kernels for every number; an fp16 NaN comes out as
// CUDA's canonical 0x7fff (the CPU, like c10 on the CPU, keeps the sign: 0x7e00).
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16_t x) { return __uint_as_float(static_cast<uint32_t>(x.x) << 16); }
__device__ __forceinline__ float to_float(fp16_t x) { return __half2float(__ushort_as_half(x.x)); }

template <class T>
__device__ __forceinline__ T from_float(float f);
template <>
__device__ __forceinline__ float from_float<float>(float f) { return f; }
template <>
__device__ __forceinline__ bf16_t from_float<bf16_t>(float f) {
  if (f != f) return bf16_t{0x7fc0};
  uint32_t u = __float_as_uint(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}
template <>
__device__ __forceinline__ fp16_t from_float<fp16_t>(float f) {
  return fp16_t{__half_as_ushort(__float2half_rn(f))};
}

// kILP consecutive elements as one aligned vector (16 bytes for fp32, 8 for
// 16-bit types).
template <class T>
struct alignas(sizeof(T) * kILP) Pack {
  T v[kILP];
};

template <class T>
__device__ __forceinline__ void load_pack(float (&out)[kILP], const T* p) {
  const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
  for (int k = 0; k < kILP; ++k) out[k] = to_float(pk.v[k]);
}

template <class T>
__device__ __forceinline__ void store_pack(T* p, const float (&in)[kILP]) {
  Pack<T> pk;
#pragma unroll
  for (int k = 0; k < kILP; ++k) pk.v[k] = from_float<T>(in[k]);
  *reinterpret_cast<Pack<T>*>(p) = pk;
}

template <class T>
__device__ __forceinline__ bool pack_aligned(const T* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kILP) == 0;
}

// Elements i.. of a stream as floats: a whole pack, or element i alone.
template <class T>
__device__ __forceinline__ void load_elems(float (&out)[kILP], const T* p, int i, bool pack) {
  if (pack) {
    load_pack(out, p + i);
  } else {
    out[0] = to_float(p[i]);
  }
}

template <class T>
__device__ __forceinline__ void store_elems(T* p, int i, const float (&in)[kILP], bool pack) {
  if (pack) {
    store_pack(p + i, in);
  } else {
    p[i] = from_float<T>(in[0]);
  }
}

// Runs body(i, vector) over a chunk: whole aligned packs of kILP elements when
// `aligned`, then the remaining elements one by one. Element i is always
// handled by the same arithmetic, so the two paths agree bit for bit.
template <class Body>
__device__ __forceinline__ void for_chunk(int n, bool aligned, Body body) {
  int done = 0;
  if (aligned) {
    const int packs = n / kILP;
    for (int k = threadIdx.x; k < packs; k += blockDim.x) body(k * kILP, true);
    done = packs * kILP;
  }
  for (int i = done + threadIdx.x; i < n; i += blockDim.x) body(i, false);
}

}  // namespace cuda
}  // namespace fusedopt
