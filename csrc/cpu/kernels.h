// The boundary between the op entry points (compiled for the baseline ISA) and
// the vector loops (compiled once per ISA). Only plain data crosses it.
#pragma once

#include <cstdint>

#include "../math/clip.h"
#include "../rules/registry.h"
#include "dtypes.h"

namespace fusedopt {
namespace cpu {

constexpr int kMaxStates = 4;  // state lists a rule may declare at most

// Base pointers of one parameter's tensors; absent streams are null.
struct RuleTensor {
  void* param;
  const void* grad;
  void* states[kMaxStates];
  float* master;  // fp32 copy of a low-precision param, updated in the same pass
  float* absmax[kMaxStates];  // 8-bit states: each state's block scales (else null)
  // stochastic rounding (else null / 0): the param's int64 [seed, applied
  // steps], read by the kernel (this step is applied step key[1] + 1; the call
  // advances key[1] after the kernels), and the global index of element 0
  int64_t* key;
  int64_t offset;
};

// Updates elements [lo, hi) of one tensor by `Rule`.
template <class Rule>
using RangeFn = void (*)(const RuleTensor&, const typename Rule::Consts&, const math::GradFactors&, int64_t lo,
                         int64_t hi);

// Picks the kernel for a call's dtypes, active state count, masters and
// stochastic rounding of the params (null: not compiled).
template <class Rule>
using SelectFn = RangeFn<Rule> (*)(DType param, DType grad, DType state, int active, bool master, bool stochastic);

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
  // the rule's kernels, one entry per rule (csrc/rules/registry.h)
#define FO_RULE_ENTRY(name, Rule) SelectFn<Rule> name;
  FUSEDOPT_RULES(FO_RULE_ENTRY)
#undef FO_RULE_ENTRY
  UnscaleRangeFn (*unscale)(DType grad);
  SumsqRangeFn (*sumsq)(DType grad);
  ClampRangeFn (*clamp)(DType grad);
};

// The table's entry of `Rule`, as a member pointer (generic code picks it by type).
template <class Rule>
constexpr SelectFn<Rule> KernelTable::*select_of();
#define FO_RULE_MEMBER(name, Rule)                          \
  template <>                                               \
  constexpr SelectFn<Rule> KernelTable::*select_of<Rule>() { \
    return &KernelTable::name;                              \
  }
FUSEDOPT_RULES(FO_RULE_MEMBER)
#undef FO_RULE_MEMBER

const KernelTable& kernels_generic();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
#endif

// The table for this machine, chosen once (FUSEDOPT_CPU_ISA can force a lower one).
const KernelTable& active_kernels();

}  // namespace cpu
}  // namespace fusedopt
