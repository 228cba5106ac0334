// Pieces shared by the CUDA kernels: dtype dispatch, the per-tensor scalar
// kernels (step counters, momentum flags) and the step's device-side control
// values.
#pragma once

#include <cuda_runtime.h>

#include "../math/clip.h"
#include "launch.h"
#include "launch_kernel.cuh"
#include "multi_tensor_apply.cuh"

namespace fusedopt {
namespace cuda {

// Calls fn(T{}) with T the storage type of `d`.
template <class Fn>
void dispatch_dtype(DType d, Fn fn) {
  switch (d) {
    case DType::F32:
      fn(float{});
      return;
    case DType::BF16:
      fn(bf16_t{});
      return;
    case DType::F16:
      fn(fp16_t{});
      return;
    case DType::U8:
      return;  // 8-bit states: not a storage type of this dispatch (rules.cu dispatches them)
  }
}

// Calls fn(P{}, G{}, S{}) for the storage types of a param, grad and state
// list; grads come in the param's dtype or in fp32. Returns false for any other
// combination (the entry points refuse those before launching).
template <class Fn>
bool dispatch_param_grad_state(DType param, DType grad, DType state, Fn fn) {
  bool ok = false;
  dispatch_dtype(param, [&](auto p) {
    using P = decltype(p);
    dispatch_dtype(state, [&](auto s) {
      using S = decltype(s);
      if (grad == param) {
        fn(P{}, P{}, S{});
        ok = true;
      } else if (grad == DType::F32) {
        fn(P{}, float{}, S{});
        ok = true;
      }
    });
  });
  return ok;
}

// Whether the step is skipped: GradScaler sums per-device flags, so any nonzero
// value means "skip". Every block checks it before touching memory.
__device__ __forceinline__ bool skip_step(const float* found_inf) {
  return found_inf != nullptr && *found_inf != 0.0f;
}

__device__ __forceinline__ double lr_of(const StepControl& c) {
  if (c.lr_ptr == nullptr) return c.lr;
  return c.lr_is_double ? *static_cast<const double*>(c.lr_ptr)
                        : static_cast<double>(*static_cast<const float*>(c.lr_ptr));
}

__device__ __forceinline__ math::GradFactors factors_of(const StepControl& c) {
  return math::grad_factors(c.grad_scale, c.sumsq, c.max_norm, c.max_value, c.maximize);
}

// Per-tensor scalars advanced once per applied step, after the update kernels
// (whose blocks all read them): step += 1, momentum_first = false, a rounding
// key's applied steps (int64 [seed, steps]: element 1) += 1. Skipped on the
// device when found_inf is set. (scalars.cu)
enum class ScalarOp : int { kIncrementFloat = 0, kClearBool = 1, kAdvanceRoundingKey = 2 };

// over t.scalar
const char* advance_scalars(const TensorLists& t, const float* found_inf, ScalarOp op, cudaStream_t stream);
// over ptrs[0 .. n)
const char* advance_scalars(void* const* ptrs, int n, const float* found_inf, ScalarOp op, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedopt
