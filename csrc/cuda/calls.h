// A validated CUDA call, ready to launch: each tensor's pointers, gathered once.
// The rules' list ops gather and launch at once; a native plan (plan_ops.cpp) gathers
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
  std::vector<void*> param, state[kMaxStates], absmax[kMaxStates], master, scalar, rounding_key;
  std::vector<const void*> grad;
  std::vector<int64_t> rounding_offset;

  // The kernels' view, over `numels` (which must outlive it).
  TensorLists view(const std::vector<int64_t>& numels) const;
};

// The pointers of a rule's call with `active` state lists.
LaunchPointers rule_pointers(const CallInfo& d, const RuleLists& l, int active);

// The device pointers and values the kernels read for these scalars.
StepControl control_of(const StepScalars& s);

// Launches `Rule` on torch's current stream of the call's device; a
// hyper_tensor (checked here) is read by the kernels instead of `hyper`.
template <class Rule>
void run_rule(const LaunchPointers& ptrs, const CallInfo& d, int active, const std::vector<double>& hyper,
              const std::optional<Tensor>& hyper_tensor, const StepControl& ctl, const char* op);

// Grads of one dtype, launched together by the stats pass.
struct StatsGroup {
  int n;
  const int64_t* numel;
  const void* const* grad;
  DType dtype;
};

// grads *= inv_scale, found_inf := 1 on any inf/nan grad, on found_inf's device
// (unscale_, and a native plan's plan_unscale_ over its bound grads); `op`
// names the caller in errors.
void run_unscale(const TensorList& grads, const Tensor& found_inf, const Tensor& inv_scale, const char* op);

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
