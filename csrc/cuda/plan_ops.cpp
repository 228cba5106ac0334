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
  static constexpr int64_t kFirstId = int64_t{1} << 40;  // apart from the CPU library's

  CallInfo call;  // dtypes, element counts and device the launches use
  LaunchPointers ptrs;

  void prepare(PlanKind kind, bool flag, const CallInfo& d, const std::vector<TensorList>& l,
               const TensorList& grads) {
    call = d;
    torch::stable::accelerator::DeviceGuard guard(d.place.index);  // as in adam_ (optim_ops.cpp)
    ptrs = kind == PlanKind::Adam ? adam_pointers(d, l[0], grads, l[1], l[2], l[3], l[4], l[5], flag)
                                  : sgd_pointers(d, l[0], grads, l[1], l[2], l[3], flag);
  }

  void set_grads(PlanKind, const TensorList& grads) {
    for (size_t i = 0; i < grads.size(); ++i) ptrs.grad[i] = grads[i].const_data_ptr();
  }
};

using Plan = StepPlan<CudaTables>;

}  // namespace

int64_t adam_plan_make(
    StableListHandle params,
    StableListHandle grads,
    StableListHandle exp_avgs,
    StableListHandle exp_avg_sqs,
    StableListHandle max_exp_avg_sqs,
    StableListHandle steps,
    StableListHandle master_params,
    bool amsgrad) {
  return make_adam_plan<CudaTables>(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params,
                                    amsgrad);
}

int64_t sgd_plan_make(
    StableListHandle params,
    StableListHandle grads,
    StableListHandle momentum_buffers,
    StableListHandle momentum_first,
    StableListHandle master_params,
    bool has_momentum) {
  return make_sgd_plan<CudaTables>(params, grads, momentum_buffers, momentum_first, master_params, has_momentum);
}

bool plan_bind(StableListHandle grads, int64_t plan_id) { return bind_plan<CudaTables>(grads, plan_id); }

void plan_grad_stats_(
    int64_t plan_id,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    double max_value) {
  with_bound_plan<CudaTables>(plan_id, "plan_grad_stats_", [&](Plan& plan) {
    check_stats_outputs(plan.place, grad_scale, found_inf, sumsq);
    const CallInfo& d = plan.tables.call;
    const std::vector<StatsGroup> one{
        StatsGroup{static_cast<int>(d.numels.size()), d.numels.data(), plan.tables.ptrs.grad.data(), d.grad}};
    run_grad_stats(plan.place, one, grad_scale, found_inf, sumsq, max_value, "plan_grad_stats_");
  });
}

void adam_plan_step_(
    const Tensor& anchor,
    int64_t plan_id,
    double lr,
    std::optional<Tensor> lr_tensor,
    double beta1,
    double beta2,
    double eps,
    double weight_decay,
    bool decoupled,
    bool maximize,
    std::optional<Tensor> grad_scale,
    std::optional<Tensor> found_inf,
    std::optional<Tensor> sumsq,
    double max_norm,
    double max_value) {
  (void)anchor;  // only picks the dispatch key
  update_bound<CudaTables>(
      plan_id, PlanKind::Adam, "adam_plan_step_", lr_tensor, grad_scale, found_inf, sumsq, [&](Plan& plan) {
        run_adam(plan.tables.ptrs, plan.tables.call, plan.flag,
                 math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled},
                 control_of(lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize),
                 "adam_plan_step_");
      });
}

void sgd_plan_step_(
    const Tensor& anchor,
    int64_t plan_id,
    double lr,
    std::optional<Tensor> lr_tensor,
    double momentum,
    double dampening,
    double weight_decay,
    bool nesterov,
    bool maximize,
    std::optional<Tensor> grad_scale,
    std::optional<Tensor> found_inf,
    std::optional<Tensor> sumsq,
    double max_norm,
    double max_value) {
  (void)anchor;
  update_bound<CudaTables>(
      plan_id, PlanKind::Sgd, "sgd_plan_step_", lr_tensor, grad_scale, found_inf, sumsq, [&](Plan& plan) {
        check_plan_momentum(plan.flag, momentum, plan_id);
        run_sgd(plan.tables.ptrs, plan.tables.call, SgdHyper{momentum, dampening, weight_decay, nesterov},
                control_of(lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize),
                "sgd_plan_step_");
      });
}

void plan_release(const Tensor& anchor, int64_t plan_id) {
  (void)anchor;
  release_plan<CudaTables>(plan_id);
}

void plan_free(const Tensor& anchor, int64_t plan_id) {
  (void)anchor;
  free_plan<CudaTables>(plan_id);
}

}  // namespace cuda
}  // namespace fusedopt
