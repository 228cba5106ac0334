// The boundary between the op entry points (compiled for the baseline ISA) and
// the vector loops (compiled once per ISA). Only plain data crosses it.
#pragma once

#include <cstdint>

#include "../math/adam.h"
#include "../math/clip.h"
#include "../math/sgd.h"
#include "dtypes.h"

namespace fusedopt {
namespace cpu {

// Base pointers of one parameter's tensors; absent streams are null.
struct AdamTensor {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  void* max_exp_avg_sq;
  float* master;  // fp32 copy of a low-precision param, updated in the same pass
};

struct SgdTensor {
  void* param;
  const void* grad;
  void* momentum_buffer;
  float* master;
  bool first;  // the buffer has never been applied: start it from the gradient
};

// Each function updates elements [lo, hi) of one tensor.
using AdamRangeFn = void (*)(const AdamTensor&, const math::AdamConsts&, const math::GradFactors&, int64_t lo, int64_t hi);
using SgdRangeFn = void (*)(const SgdTensor&, const math::SgdConsts&, const math::GradFactors&, int64_t lo, int64_t hi);
// Multiplies grad[lo, hi) by inv_scale in place; returns true if any input was inf/nan.
using UnscaleRangeFn = bool (*)(void* grad, float inv_scale, int64_t lo, int64_t hi);
// Sum of clamp(grad * inv_scale, -max_value, max_value)^2 over [lo, hi) in
// double, in a fixed order that does not depend on the instruction set: element
// i goes to lane i % 16, lanes are added pairwise at the end. Sets *nonfinite
// when an input element (before scaling and clamping) is inf/nan.
using SumsqRangeFn = double (*)(const void* grad, float inv_scale, float max_value, int64_t lo, int64_t hi,
                                bool* nonfinite);
// grad[lo, hi) := clamp(grad, lo_value, hi_value) in place (NaN kept).
using ClampRangeFn = void (*)(void* grad, float lo_value, float hi_value, int64_t lo, int64_t hi);

// One instruction set's kernels. A null entry means the dtype combination is not
// compiled; the op entry points check before they modify anything.
struct KernelTable {
  const char* isa;
  AdamRangeFn (*adam)(DType param, DType grad, DType state, bool amsgrad, bool master);
  SgdRangeFn (*sgd)(DType param, DType grad, DType state, bool momentum, bool master);
  UnscaleRangeFn (*unscale)(DType grad);
  SumsqRangeFn (*sumsq)(DType grad);
  ClampRangeFn (*clamp)(DType grad);
};

const KernelTable& kernels_generic();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
#endif

// The table for this machine, chosen once (FUSEDOPT_CPU_ISA can force a lower one).
const KernelTable& active_kernels();

}  // namespace cpu
}  // namespace fusedopt
