// Step plans on the CPU: the CPU kernels' tables for the plan ops of
// plan_ops_common.h. adam_ and sgd_ remain the ops torch.compile and opcheck see.
#include "../plan_ops_common.h"
#include "calls.h"
#include "ops.h"

namespace fusedopt {
namespace cpu {
namespace {

struct CpuTables {
  static constexpr bool kCuda = false;
  static constexpr int64_t kFirstId = 1;

  AdamCall adam_call;
  SgdCall sgd_call;
  GradList grads;  // the bound grads as the stats pass reads them

  void prepare(const CallInfo& d, const AdamLists& l, bool amsgrad) {
    adam_call = prepare_adam(d, l, amsgrad);
    prepare_stats(d, PlanKind::Adam, l.grads);
  }

  void prepare(const CallInfo& d, const SgdLists& l, bool has_momentum) {
    sgd_call = prepare_sgd(d, l, has_momentum);
    prepare_stats(d, PlanKind::Sgd, l.grads);
  }

  void prepare_stats(const CallInfo& d, PlanKind kind, const TensorList& bound) {
    grads.numels = d.numels;
    grads.dtypes.assign(d.numels.size(), d.grad);
    grads.data.assign(d.numels.size(), nullptr);
    grads.total = 0;
    for (int64_t n : d.numels) grads.total += n;
    set_grads(kind, bound);
  }

  void set_grads(PlanKind kind, const TensorList& bound) {
    for (size_t i = 0; i < bound.size(); ++i) {
      const void* g = bound[i].const_data_ptr();
      grads.data[i] = g;
      if (kind == PlanKind::Adam) {
        adam_call.tensors[i].grad = g;
      } else {
        sgd_call.tensors[i].grad = g;
      }
    }
  }

  void stats(const Place&, const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
             double max_value) {
    check_stats_outputs(grad_scale, found_inf, sumsq, "plan_grad_stats_");
    run_grad_stats(grads, grad_scale, found_inf, sumsq, max_value);
  }

  void adam(bool, const math::AdamHyper& hyper, const StepScalars& s) { run_adam(adam_call, hyper, s); }

  void sgd(const SgdHyper& h, const StepScalars& s) {
    run_sgd(sgd_call, h.momentum, h.dampening, h.weight_decay, h.nesterov, s);
  }
};

}  // namespace
}  // namespace cpu
}  // namespace fusedopt

FUSEDOPT_PLAN_OPS_IMPL(CPU, fusedopt::cpu::CpuTables)
