// Step plans on the CPU (schemas in csrc/ops.cpp; what a plan is: plan_registry.h
// and step_plan.h). A plan is made from a bucket's validated lists; each step
// then binds its grads (the only list that crosses the dispatcher), runs the
// stats pass and the update over the kernel tables the plan keeps, and lets
// go of the grads. adam_ and sgd_ remain the ops torch.compile and opcheck see.
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "../plan_registry.h"
#include "../step_plan.h"
#include "calls.h"
#include "ops.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {
namespace {

struct CpuPlan {
  PlanKind kind;
  bool flag;  // Adam: amsgrad; SGD: momentum != 0
  HeldLists held;
  std::vector<int64_t> numels;
  int32_t grad_dtype = 0;  // the shim's code (raw_handles.h)
  TensorList grads;  // this step's, between plan_bind and the update
  bool bound = false;
  AdamCall adam;
  SgdCall sgd;
  GradList stats;  // the bound grads as the stats pass reads them
  std::mutex mu;

  // Adam: params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params
  // SGD:  params, grads, momentum_buffers, momentum_first, master_params
  // (grads at index 1; held lists are the others). Validates as the list op
  // does, and fills the kernel tables for these grads. Throws on any mismatch.
  CallInfo prepare(const TensorList& grads_now) {
    const auto& l = held.lists;
    if (kind == PlanKind::Adam) {
      const CallInfo d = check_adam_args(l[0], grads_now, l[1], l[2], l[3], l[4], l[5], flag, std::nullopt,
                                         std::nullopt, std::nullopt, std::nullopt, /*cuda=*/false);
      adam = prepare_adam(d, l[0], grads_now, l[1], l[2], l[3], l[4], l[5], flag);
      return d;
    }
    const CallInfo d = check_sgd_args(l[0], grads_now, l[1], l[2], l[3], flag, std::nullopt, std::nullopt,
                                      std::nullopt, std::nullopt, /*cuda=*/false);
    sgd = prepare_sgd(d, l[0], grads_now, l[1], l[2], l[3], flag);
    return d;
  }

  void set_grad_pointers() {
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

  // True when the grads fit this plan and are now bound; false when anything
  // the plan holds changed or the grads differ in kind, so the caller must
  // make a new plan (whose validation names a real problem).
  bool bind(ListArg& grads_now) {
    unbind();
    grads_now.hand_to(grads);
    bool fits = false;
    try {
      fits = fits_bound();
      if (fits) set_grad_pointers();
    } catch (...) {
      unbind();  // a refused bind keeps no grads
      throw;
    }
    if (!fits) unbind();
    bound = fits;
    return fits;
  }

  bool fits_bound() {
    if (held.contiguous) {
      return held.unchanged() && grads_match(grads, held, numels, Place{false, -1}, grad_dtype);
    }
    // channels_last and the like: validated in full, tables rebuilt
    if (!held.params_same_kind() || grads.size() != numels.size() ||
        (!grads.empty() && grads[0].dtype_code() != grad_dtype)) {
      return false;
    }
    try {
      prepare(grads);
    } catch (const std::exception&) {
      return false;
    }
    return true;
  }

  void check_bound(const char* op) const {
    FO_CHECK(bound, op, ": the step plan has no grads bound for this step (plan_bind first)");
  }

  void unbind() {
    bound = false;
    grads.release();
  }
};

using Registry = PlanRegistry<CpuPlan>;

// Tensor[] arguments taken, in order.
template <class... Lists>
std::vector<TensorList> lists_of(Lists... lists) {
  std::vector<TensorList> out;
  out.reserve(sizeof...(lists));
  (out.emplace_back(lists), ...);
  return out;
}

int64_t make_plan(PlanKind kind, bool flag, std::vector<TensorList> held, TensorList grads) {
  auto plan = std::make_shared<CpuPlan>();
  plan->kind = kind;
  plan->flag = flag;
  plan->held.lists = std::move(held);
  const CallInfo d = plan->prepare(grads);
  plan->held.record(d.layout.contiguous);
  plan->numels = d.numels;
  plan->grad_dtype = grads[0].dtype_code();
  // the stats pass's view of the grads: only the pointers change per step
  plan->stats.numels = d.numels;
  plan->stats.dtypes.assign(d.numels.size(), d.grad);
  plan->stats.data.assign(d.numels.size(), nullptr);
  for (int64_t n : d.numels) plan->stats.total += n;
  plan->grads = std::move(grads);
  plan->set_grad_pointers();
  plan->bound = true;
  return Registry::instance().add(std::move(plan));
}

// Releases the grads when the update is done, or refused.
struct Unbind {
  CpuPlan& plan;
  ~Unbind() { plan.unbind(); }
};

// An update over a plan of `kind` with grads bound: checks the step's scalars,
// runs `update(plan)`, and releases the grads whatever happens.
template <class Update>
void update_bound(int64_t plan_id, PlanKind kind, const char* op, const StepScalars& s, Update update) {
  const std::shared_ptr<CpuPlan> plan = Registry::instance().get(plan_id, op);
  std::lock_guard<std::mutex> lock(plan->mu);
  Unbind release{*plan};
  FO_CHECK(plan->kind == kind, op, ": plan ", plan_id, " is not an ", kind == PlanKind::Adam ? "Adam" : "SGD",
           " plan");
  plan->check_bound(op);
  check_step_scalars(Place{false, -1}, s.lr_tensor, s.grad_scale, s.found_inf, s.sumsq);
  update(*plan);
}

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
  std::vector<TensorList> held = lists_of(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params);
  TensorList step_grads{grads};
  FO_CHECK(!held[0].empty(), "adam_plan_make: params is empty");
  return make_plan(PlanKind::Adam, amsgrad, std::move(held), std::move(step_grads));
}

int64_t sgd_plan_make(
    StableListHandle params,
    StableListHandle grads,
    StableListHandle momentum_buffers,
    StableListHandle momentum_first,
    StableListHandle master_params,
    bool has_momentum) {
  std::vector<TensorList> held = lists_of(params, momentum_buffers, momentum_first, master_params);
  TensorList step_grads{grads};
  FO_CHECK(!held[0].empty(), "sgd_plan_make: params is empty");
  return make_plan(PlanKind::Sgd, has_momentum, std::move(held), std::move(step_grads));
}

bool plan_bind(StableListHandle grads, int64_t plan_id) {
  ListArg arg{grads};  // handed to the plan, or freed
  const std::shared_ptr<CpuPlan> plan = Registry::instance().get(plan_id, "plan_bind");
  std::lock_guard<std::mutex> lock(plan->mu);
  return plan->bind(arg);
}

void plan_grad_stats_(
    int64_t plan_id,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    double max_value) {
  const std::shared_ptr<CpuPlan> plan = Registry::instance().get(plan_id, "plan_grad_stats_");
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->check_bound("plan_grad_stats_");
  check_stats_outputs(grad_scale, found_inf, sumsq, "plan_grad_stats_");
  run_grad_stats(plan->stats, grad_scale, found_inf, sumsq, max_value);
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
  update_bound(plan_id, PlanKind::Adam, "adam_plan_step_", s, [&](CpuPlan& plan) {
    run_adam(plan.adam, math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled}, s);
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
  update_bound(plan_id, PlanKind::Sgd, "sgd_plan_step_", s, [&](CpuPlan& plan) {
    FO_CHECK((momentum != 0.0) == plan.flag, "sgd_plan_step_: plan ", plan_id, " was made for momentum ",
             plan.flag ? "!= 0" : "== 0");
    run_sgd(plan.sgd, momentum, dampening, weight_decay, nesterov, s);
  });
}

void plan_free(const Tensor& anchor, int64_t plan_id) {
  (void)anchor;
  Registry::instance().remove(plan_id);
}

}  // namespace cpu
}  // namespace fusedopt
