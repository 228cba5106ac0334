// A validated CUDA call, ready to launch: each tensor's pointers, gathered once.
// The list ops gather and launch at once; a step plan (plan_ops.cpp) gathers
// when its lists are validated, refreshes only the grads' pointers per step,
// and launches the same way.
#pragma once

#include <optional>
#include <vector>

#include "../op_args.h"
#include "launch.h"

namespace fusedopt {
namespace cuda {

// Per-list data pointers of one call; a list the launch does not read is empty.
struct LaunchPointers {
  std::vector<void*> param, state0, state1, state2, master, scalar;
  std::vector<const void*> grad;

  // The kernels' view, over `numels` (which must outlive it).
  TensorLists view(const std::vector<int64_t>& numels) const;
};

LaunchPointers adam_pointers(const CallInfo& d, const AdamLists& l, bool amsgrad);

LaunchPointers sgd_pointers(const CallInfo& d, const SgdLists& l, bool has_momentum);

// The device pointers and values the kernels read for these scalars.
StepControl control_of(const StepScalars& s);

// Launch on torch's current stream of the call's device.
void run_adam(const LaunchPointers& ptrs, const CallInfo& d, bool amsgrad, const math::AdamHyper& hyper,
              const StepControl& ctl, const char* op);

void run_sgd(const LaunchPointers& ptrs, const CallInfo& d, const SgdHyper& hyper, const StepControl& ctl,
             const char* op);

// Grads of one dtype, launched together by the stats pass.
struct StatsGroup {
  int n;
  const int64_t* numel;
  const void* const* grad;
  DType dtype;
};

// The one-element float32 tensors grad_stats_ reads and writes, on `at`.
void check_stats_outputs(const Place& at, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
                         const Tensor& sumsq);

// found_inf := 1 on any inf/nan grad; sumsq += the sum of squares of the
// unscaled (and clamped) grads, over `groups` in their order (groups with no
// elements are skipped).
void run_grad_stats(const Place& at, const std::vector<StatsGroup>& groups, const std::optional<Tensor>& grad_scale,
                    const Tensor& found_inf, const Tensor& sumsq, double max_value, const char* op);

}  // namespace cuda
}  // namespace fusedopt
