// Test-only stand-in for CUDA's cuda_runtime.h: what csrc/cuda uses of CUDA,
// so that g++ compiles the kernels unchanged as C++ and runs them on the CPU
// under the emulation in tests/cuda_emu/runtime (blocks one after another, each
// thread of a block a fiber). Never part of the product or the wheel.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

// ------------------------------------------------------------ qualifiers

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
// Blocks run one at a time on one OS thread, so a static variable is the
// running block's shared memory. The link gathers the kernels' statics into one
// range (runtime/shared_memory.ld): the runtime poisons it at each block's
// start and watches accesses to it for races.
#define __shared__ static

// ------------------------------------------------------------ index types

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

// Set by the runtime before it resumes a thread's fiber.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

// ------------------------------------------------------------ runtime API

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorMisalignedAddress = 716,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

// Errors are those of the emulated launches (a detector's report included);
// cudaGetLastError returns and clears the last one, as CUDA does.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
// Streams are synchronous: every call has finished when it returns.
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t count);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
// Exactly sized: an access one byte past the end is out of bounds (ASan).
cudaError_t cudaMalloc(void** ptr, size_t size);
cudaError_t cudaFree(void* ptr);

template <class T>
inline cudaError_t cudaMalloc(T** ptr, size_t size) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), size);
}

// ------------------------------------------------------------ device functions

// The call site of a barrier or shuffle, for the divergence reports.
#define FO_EMU_SITE const char* fo_emu_file = __builtin_FILE(), int fo_emu_line = __builtin_LINE()

void __syncthreads(FO_EMU_SITE);
int __syncthreads_or(int predicate, FO_EMU_SITE);
int __syncthreads_and(int predicate, FO_EMU_SITE);
int __syncthreads_count(int predicate, FO_EMU_SITE);
// No ordering to emulate: blocks run one after another.
void __threadfence();

namespace fo_emu {
enum class ShuffleMode : int { kIdx = 0, kUp = 1, kDown = 2, kXor = 3 };
// Exchanges `bits` (the value's bytes) among the lanes named in `mask`; returns
// the source lane's bits as it held them at this same shuffle.
uint64_t shuffle(unsigned mask, uint64_t bits, ShuffleMode mode, int lane_arg, int width, const char* file, int line);

template <class T>
inline T shuffle_as(unsigned mask, T var, ShuffleMode mode, int lane_arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shuffle(mask, bits, mode, lane_arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace fo_emu

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, FO_EMU_SITE) {
  return fo_emu::shuffle_as(mask, var, fo_emu::ShuffleMode::kIdx, src_lane, width, fo_emu_file, fo_emu_line);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, FO_EMU_SITE) {
  return fo_emu::shuffle_as(mask, var, fo_emu::ShuffleMode::kUp, static_cast<int>(delta), width, fo_emu_file,
                            fo_emu_line);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, FO_EMU_SITE) {
  return fo_emu::shuffle_as(mask, var, fo_emu::ShuffleMode::kDown, static_cast<int>(delta), width, fo_emu_file,
                            fo_emu_line);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, FO_EMU_SITE) {
  return fo_emu::shuffle_as(mask, var, fo_emu::ShuffleMode::kXor, lane_mask, width, fo_emu_file, fo_emu_line);
}

// Atomics: the runtime checks the address (ASan) and leaves them out of the
// overlap check (many blocks updating one counter is what they are for).
unsigned int atomicAdd(unsigned int* address, unsigned int val);
int atomicAdd(int* address, int val);
unsigned long long atomicAdd(unsigned long long* address, unsigned long long val);
float atomicAdd(float* address, float val);
double atomicAdd(double* address, double val);

// Bit casts and correctly rounded fused multiply-adds (glibc's fma/fmaf are
// exact, as CUDA's are).
inline float __uint_as_float(unsigned int u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// ------------------------------------------------------------ launches

namespace fo_emu {

struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t dynamic_shared;
  const void* kernel;  // for the reports: symbolized to the kernel's name
  size_t param_bytes;  // the kernel's parameters as CUDA lays them out
};

// Checks the launch against CUDA's limits, then runs enter(call) as every thread
// of every block. Returns the launch's error (also kept for cudaGetLastError).
cudaError_t run_launch(const LaunchShape& shape, void (*enter)(void*), void* call);

// The size of a kernel's parameter space: each parameter at its alignment, in
// order, as the CUDA ABI lays them out.
template <class... P>
constexpr size_t param_bytes() {
  size_t offset = 0;
  ((offset = (offset + alignof(P) - 1) / alignof(P) * alignof(P) + sizeof(P)), ...);
  return offset;
}

// A kernel with its parameters, converted once as a launch converts its
// arguments; every thread then calls the kernel with its own copy of them, as
// the C++ ABI passes by-value parameters. That copy (a chunk table is ~29 KiB,
// copied for each of a block's 512 threads) is most of what a small block
// costs to emulate, so it is not instrumented: it is the runtime's copy, not
// the kernel's access.
template <class... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<P...> params;

  template <size_t... I>
  __attribute__((no_sanitize("thread", "undefined"))) void call(std::index_sequence<I...>) {
    kernel(std::get<I>(params)...);
  }

  static void enter(void* self) { static_cast<KernelCall*>(self)->call(std::index_sequence_for<P...>{}); }
};

}  // namespace fo_emu

// What `kernel<<<grid, block, shared, stream>>>(args...)` does under the
// emulation (csrc/cuda/launch_kernel.cuh calls it when a host compiler, not
// nvcc, compiles the kernels). The stream is synchronous.
template <class... P, class... A>
inline void fo_emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, cudaStream_t, A&&... args) {
  fo_emu::KernelCall<P...> call{kernel, std::tuple<P...>(static_cast<P>(std::forward<A>(args))...)};
  fo_emu::run_launch({grid, block, shared, reinterpret_cast<const void*>(kernel), fo_emu::param_bytes<P...>()},
                     &fo_emu::KernelCall<P...>::enter, &call);
}
