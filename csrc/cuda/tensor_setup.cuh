// What one thread of a rule kernel's block derives for all its threads from
// the tensor the block works on: shared by the plain and the 8-bit kernels.
#pragma once

#include "kernel_common.cuh"
#include "rounded_store.cuh"

namespace fusedopt {
namespace cuda {

// Thread 0 derives the tensor's constants (Adam: double-precision pow), from
// the counter as this update sees it, and the step's grad factors; with
// stochastic rounding also the tensor's rounding key (in shared_key): this
// update is applied step key[1] + 1. The counters and keys themselves advance
// after every block of every launch has read them. The caller syncs the block
// before any thread reads what this wrote.
template <class Rule, bool kStochastic, class Table>
__device__ __forceinline__ void setup_tensor(const Table& table, const ChunkSpan& s,
                                             const typename Rule::Hyper& hyper, const double* hyper_ptr,
                                             const StepControl& ctl, typename Rule::Consts& consts,
                                             math::GradFactors& factors) {
  if (threadIdx.x != 0) return;
  const typename Rule::Hyper h = hyper_ptr != nullptr ? Rule::unpack(hyper_ptr) : hyper;
  const LrArg lr{lr_of(ctl), ctl.lr_ptr != nullptr && !ctl.lr_is_double};
  consts = Rule::consts(h, lr, counter_value<Rule>(table.scalar[s.tensor]));
  factors = factors_of(ctl);
  if (kStochastic) {
    const int64_t* key = static_cast<const int64_t*>(table.ptr[2 + Rule::kStates][s.tensor]);
    shared_key = RoundKey{static_cast<uint64_t>(key[0]), static_cast<uint64_t>(key[1]) + 1,
                          static_cast<uint64_t>(table.offset[s.tensor] + s.start)};
  }
}

}  // namespace cuda
}  // namespace fusedopt
