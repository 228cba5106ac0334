// Step plans on the CPU: the CPU kernels' tables for the plan ops of
// plan_ops_common.h. adam_ and sgd_ remain the ops torch.compile and opcheck see.
#include "../plan_ops_common.h"
#include "calls.h"
#include "ops.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {
namespace {

struct CpuTables {
  static constexpr bool kCuda = false;
  static constexpr int64_t kFirstId = 1;

  AdamCall adam;
  SgdCall sgd;
  GradList stats;  // the bound grads as the stats pass reads them

  void prepare(PlanKind kind, bool flag, const CallInfo& d, const std::vector<TensorList>& l,
               const TensorList& grads) {
    if (kind == PlanKind::Adam) {
      adam = prepare_adam(d, l[0], grads, l[1], l[2], l[3], l[4], l[5], flag);
    } else {
      sgd = prepare_sgd(d, l[0], grads, l[1], l[2], l[3], flag);
    }
    stats.numels = d.numels;
    stats.dtypes.assign(d.numels.size(), d.grad);
    stats.data.assign(d.numels.size(), nullptr);
    stats.total = 0;
    for (int64_t n : d.numels) stats.total += n;
    set_grads(kind, grads);
  }

  void set_grads(PlanKind kind, const TensorList& grads) {
    for (size_t i = 0; i < grads.size(); ++i) {
      const void* g = grads[i].const_data_ptr();
      stats.data[i] = g;
      if (kind == PlanKind::Adam) {
        adam.tensors[i].grad = g;
      } else {
        sgd.tensors[i].grad = g;
      }
    }
  }
};

using Plan = StepPlan<CpuTables>;

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
  return make_adam_plan<CpuTables>(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params,
                                   amsgrad);
}

int64_t sgd_plan_make(
    StableListHandle params,
    StableListHandle grads,
    StableListHandle momentum_buffers,
    StableListHandle momentum_first,
    StableListHandle master_params,
    bool has_momentum) {
  return make_sgd_plan<CpuTables>(params, grads, momentum_buffers, momentum_first, master_params, has_momentum);
}

bool plan_bind(StableListHandle grads, int64_t plan_id) { return bind_plan<CpuTables>(grads, plan_id); }

void plan_grad_stats_(
    int64_t plan_id,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    double max_value) {
  with_bound_plan<CpuTables>(plan_id, "plan_grad_stats_", [&](Plan& plan) {
    check_stats_outputs(grad_scale, found_inf, sumsq, "plan_grad_stats_");
    run_grad_stats(plan.tables.stats, grad_scale, found_inf, sumsq, max_value);
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
  const StepScalars s{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize};
  update_bound<CpuTables>(plan_id, PlanKind::Adam, "adam_plan_step_", lr_tensor, grad_scale, found_inf, sumsq,
                          [&](Plan& plan) {
                            run_adam(plan.tables.adam, math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled},
                                     s);
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
  const StepScalars s{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize};
  update_bound<CpuTables>(plan_id, PlanKind::Sgd, "sgd_plan_step_", lr_tensor, grad_scale, found_inf, sumsq,
                          [&](Plan& plan) {
                            check_plan_momentum(plan.flag, momentum, plan_id);
                            run_sgd(plan.tables.sgd, momentum, dampening, weight_decay, nesterov, s);
                          });
}

void plan_release(const Tensor& anchor, int64_t plan_id) {
  (void)anchor;
  release_plan<CpuTables>(plan_id);
}

void plan_free(const Tensor& anchor, int64_t plan_id) {
  (void)anchor;
  free_plan<CpuTables>(plan_id);
}

}  // namespace cpu
}  // namespace fusedopt
