// Step plans on CUDA: the launch pointers for the plan ops of
// plan_ops_common.h. A step binds its grads (their data pointers replace the
// last step's), then the stats pass and the update launch over the pointers the
// plan gathered when it was made, as adam_/sgd_/grad_stats_ launch over theirs:
// a step's host work per tensor is the plan's re-check and one pointer.
#include "../plan_ops_common.h"
#include "calls.h"
#include "device.h"
#include "ops.h"

namespace fusedopt {
namespace cuda {
namespace {

struct CudaTables {
  static constexpr bool kCuda = true;
  static constexpr int64_t kFirstId = kPlanIdSpan;  // the block after the CPU library's

  CallInfo call;  // dtypes, element counts and device the launches use
  LaunchPointers ptrs;

  // on the tensors' device before any mutable pointer is taken, as in adam_ (optim_ops.cpp)
  void prepare(const CallInfo& d, const AdamLists& l, bool amsgrad) {
    call = d;
    torch::stable::accelerator::DeviceGuard guard(d.place.index);
    ptrs = adam_pointers(d, l, amsgrad);
  }

  void prepare(const CallInfo& d, const SgdLists& l, bool has_momentum) {
    call = d;
    torch::stable::accelerator::DeviceGuard guard(d.place.index);
    ptrs = sgd_pointers(d, l, has_momentum);
  }

  void set_grads(PlanKind, const TensorList& grads) {
    for (size_t i = 0; i < grads.size(); ++i) ptrs.grad[i] = grads[i].const_data_ptr();
  }

  void stats(const Place& at, const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
             double max_value) {
    check_stats_outputs(at, grad_scale, found_inf, sumsq);
    // one group: a plan's grads have one dtype
    const std::vector<StatsGroup> one{
        StatsGroup{static_cast<int>(call.numels.size()), call.numels.data(), ptrs.grad.data(), call.grad}};
    run_grad_stats(at, one, grad_scale, found_inf, sumsq, max_value, "plan_grad_stats_");
  }

  void adam(bool amsgrad, const math::AdamHyper& hyper, const StepScalars& s) {
    run_adam(ptrs, call, amsgrad, hyper, control_of(s), "adam_plan_step_");
  }

  void sgd(const SgdHyper& hyper, const StepScalars& s) {
    run_sgd(ptrs, call, hyper, control_of(s), "sgd_plan_step_");
  }
};

}  // namespace
}  // namespace cuda
}  // namespace fusedopt

FUSEDOPT_PLAN_OPS_IMPL(CUDA, fusedopt::cuda::CudaTables)
