// Native plans on CUDA: the launch pointers for the plan ops of
// plan_ops_common.h. A step binds its grads (their data pointers replace the
// last step's), then the stats pass and the update launch over the pointers the
// plan gathered when it was made, as the list ops and grad_stats_ launch over theirs:
// a step's host work per tensor is the plan's re-check and one pointer.
#include "../plan_ops_common.h"
#include "calls.h"
#include "device.h"
#include "ops.h"

namespace fusedopt {
namespace cuda {
namespace {

struct CudaPlans {
  static constexpr bool kCuda = true;
  static constexpr int64_t kFirstId = kPlanIdSpan;  // the block after the CPU library's

  // plan_unscale_ over a plan's bound grads (plan_bound_ops.h)
  static void unscale(const TensorList& grads, const Tensor& found_inf, const Tensor& inv_scale, const char* op) {
    run_unscale(grads, found_inf, inv_scale, op);
  }

  template <class Rule>
  struct Call {
    CallInfo call;  // dtypes, element counts and device the launches use
    LaunchPointers ptrs;
    int active = 0;

    // on the tensors' device before any mutable pointer is taken, as in the list op (optim_ops.cpp)
    void prepare(const CallInfo& d, const RuleLists& l, int active_states) {
      call = d;
      active = active_states;
      torch::stable::accelerator::DeviceGuard guard(d.place.index);
      ptrs = rule_pointers(d, l, active);
    }

    void set_grads(const TensorList& grads) {
      for (size_t i = 0; i < grads.size(); ++i) ptrs.grad[i] = grads[i].const_data_ptr();
    }

    void stats(const Place& at, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
               const Tensor& sumsq, double max_value) {
      check_stats_outputs(at, grad_scale, found_inf, sumsq);
      // one group: a plan's grads have one dtype
      const std::vector<StatsGroup> one{
          StatsGroup{static_cast<int>(call.numels.size()), call.numels.data(), ptrs.grad.data(), call.grad}};
      run_grad_stats(at, one, grad_scale, found_inf, sumsq, max_value, "plan_grad_stats_");
    }

    void step(const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor, const StepScalars& s) {
      run_rule<Rule>(ptrs, call, active, hyper, hyper_tensor, control_of(s), "plan_step_");
    }
  };
};

}  // namespace
}  // namespace cuda
}  // namespace fusedopt

#define FO_PLAN_BACKEND fusedopt::cuda::CudaPlans
FUSEDOPT_PLAN_OPS_IMPL(CUDA, fusedopt::cuda::CudaPlans)
