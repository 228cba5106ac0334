// The plan ops' backend-independent half (schemas in csrc/ops.cpp; what a plan
// is: plan_registry.h and step_plan.h). A plan is made from a bucket's lists,
// validated as adam_/sgd_ validate them; each later step binds its grads (the
// only list that crosses the dispatcher), runs the stats pass and the update
// over kernel tables the plan keeps, and lets go of the grads.
//
// Each backend supplies its tables (csrc/cpu/plan_ops.cpp, csrc/cuda/plan_ops.cpp):
//
//   struct Tables {
//     static constexpr bool kCuda;        // where its plans' tensors live
//     static constexpr int64_t kFirstId;  // its first plan id (see PlanRegistry)
//     // fills the tables from validated lists, grads included
//     void prepare(const CallInfo&, const AdamLists&, bool amsgrad);
//     void prepare(const CallInfo&, const SgdLists&, bool has_momentum);
//     // only the grads' data pointers changed since prepare()
//     void set_grads(PlanKind, const TensorList& grads);
//     // the stats pass and the updates over the bound grads
//     void stats(const Place&, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
//                const Tensor& sumsq, double max_value);
//     void adam(bool amsgrad, const math::AdamHyper&, const StepScalars&);
//     void sgd(const SgdHyper&, const StepScalars&);
//   };
//
// and registers the plan ops with FUSEDOPT_PLAN_OPS_IMPL (at the end).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <vector>

#include <torch/csrc/stable/library.h>

#include "math/adam.h"
#include "op_args.h"
#include "plan_registry.h"
#include "step_plan.h"

namespace fusedopt {

template <class Tables>
struct StepPlan {
  static constexpr int64_t kFirstId = Tables::kFirstId;

  PlanKind kind = PlanKind::Adam;
  bool flag = false;  // Adam: amsgrad; SGD: momentum != 0
  Place place{Tables::kCuda, -1};
  HeldLists held;
  int32_t grad_dtype = 0;  // the shim's code (raw_handles.h)
  TensorList grads;        // this step's, between the bind and the update
  bool bound = false;
  Tables tables;
  std::mutex mu;

  // Adam's held lists: params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
  // master_params; SGD's: params, momentum_buffers, momentum_first,
  // master_params. Validates as the list op does and fills the tables for
  // these grads. Throws on any mismatch.
  CallInfo prepare(const TensorList& grads_now) {
    const auto& h = held.lists;
    const auto none = std::nullopt;  // the step's scalars are checked by each update
    if (kind == PlanKind::Adam) {
      const AdamLists l{h[0], grads_now, h[1], h[2], h[3], h[4], h[5]};
      const CallInfo d = check_adam_args(l, flag, none, none, none, none, Tables::kCuda);
      tables.prepare(d, l, flag);
      return d;
    }
    const SgdLists l{h[0], grads_now, h[1], h[2], h[3]};
    const CallInfo d = check_sgd_args(l, flag, none, none, none, none, Tables::kCuda);
    tables.prepare(d, l, flag);
    return d;
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
      if (fits) tables.set_grads(kind, grads);
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
      return held.unchanged(/*same_address=*/true) && grads_match(grads, held, place, grad_dtype);
    }
    // channels_last and the like: validated in full, tables rebuilt
    if (!held.unchanged(/*same_address=*/false) || !grads_match(grads, held, place, grad_dtype)) return false;
    try {
      return same_place(prepare(grads).place, place);  // moved to another device: a new plan
    } catch (const std::exception&) {
      return false;
    }
  }

  static bool same_place(const Place& a, const Place& b) { return a.cuda == b.cuda && a.index == b.index; }

  void check_bound(const char* op) const {
    FO_CHECK(bound, op, ": the step plan has no grads bound for this step (plan_bind first)");
  }

  void unbind() {
    bound = false;
    grads.release();
  }
};

template <class Tables>
using PlansOf = PlanRegistry<StepPlan<Tables>>;

// Tensor[] arguments taken, in order.
template <class... Lists>
std::vector<TensorList> lists_of(Lists... lists) {
  std::vector<TensorList> out;
  out.reserve(sizeof...(lists));
  (out.emplace_back(lists), ...);
  return out;
}

// A new plan of `held` (the lists after the grads), made with `grads` bound.
template <class Tables>
int64_t make_plan(PlanKind kind, bool flag, std::vector<TensorList> held, TensorList grads, const char* op) {
  FO_CHECK(!held[0].empty(), op, ": params is empty");
  auto plan = std::make_shared<StepPlan<Tables>>();
  plan->kind = kind;
  plan->flag = flag;
  plan->held.lists = std::move(held);
  const CallInfo d = plan->prepare(grads);
  plan->place = d.place;
  // a CPU Adam plan's step counters can be read on the host (see HeldLists::steps_list);
  // Adam's steps and SGD's first-step flags are one-element tensors
  const bool adam = kind == PlanKind::Adam;
  std::vector<char> scalars(plan->held.lists.size(), 0);
  scalars[adam ? 4 : 2] = 1;
  plan->held.record(d.layout.contiguous, adam && !Tables::kCuda ? 4 : -1, std::move(scalars));
  plan->grad_dtype = grads[0].dtype_code();
  plan->grads = std::move(grads);  // the same handles: the tables' pointers hold
  plan->bound = true;
  return PlansOf<Tables>::instance().add(std::move(plan));
}

// The plan ops' entry points, one set per backend (schemas in csrc/ops.cpp).
namespace plan_ops {

template <class Tables>
int64_t adam_plan_make(StableListHandle params, StableListHandle grads, StableListHandle exp_avgs,
                       StableListHandle exp_avg_sqs, StableListHandle max_exp_avg_sqs, StableListHandle steps,
                       StableListHandle master_params, bool amsgrad) {
  std::vector<TensorList> held = lists_of(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params);
  TensorList step_grads{grads};
  return make_plan<Tables>(PlanKind::Adam, amsgrad, std::move(held), std::move(step_grads), "adam_plan_make");
}

template <class Tables>
int64_t sgd_plan_make(StableListHandle params, StableListHandle grads, StableListHandle momentum_buffers,
                      StableListHandle momentum_first, StableListHandle master_params, bool has_momentum) {
  std::vector<TensorList> held = lists_of(params, momentum_buffers, momentum_first, master_params);
  TensorList step_grads{grads};
  return make_plan<Tables>(PlanKind::Sgd, has_momentum, std::move(held), std::move(step_grads), "sgd_plan_make");
}

template <class Tables>
bool plan_bind(StableListHandle grads, int64_t plan_id) {
  ListArg arg{grads};  // handed to the plan, or freed
  // Another library's plan: the grads were dispatched here because they are not
  // where that plan's tensors are (a model moved by .cpu() or .cuda()), so it
  // does not fit them. An unknown id of this library's own is a bug: refused.
  if (!PlansOf<Tables>::in_range(plan_id)) return false;
  const auto plan = PlansOf<Tables>::instance().get(plan_id, "plan_bind");
  std::lock_guard<std::mutex> lock(plan->mu);
  return plan->bind(arg);
}

template <class Tables>
void plan_grad_stats_(int64_t plan_id, std::optional<Tensor> grad_scale, Tensor found_inf, Tensor sumsq,
                      double max_value) {
  const auto plan = PlansOf<Tables>::instance().get(plan_id, "plan_grad_stats_");
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->check_bound("plan_grad_stats_");
  plan->tables.stats(plan->place, grad_scale, found_inf, sumsq, max_value);
}

// An update over a plan of `kind` with grads bound: checks the step's scalars
// where the plan's tensors live, runs `update(plan)`, and releases the grads
// whatever happens.
template <class Tables, class Update>
void update_bound(int64_t plan_id, PlanKind kind, const char* op, const StepScalars& s, Update update) {
  const auto plan = PlansOf<Tables>::instance().get(plan_id, op);
  std::lock_guard<std::mutex> lock(plan->mu);
  struct Unbind {
    StepPlan<Tables>& plan;
    ~Unbind() { plan.unbind(); }
  } release{*plan};
  FO_CHECK(plan->kind == kind, op, ": plan ", plan_id, " is not an ", kind == PlanKind::Adam ? "Adam" : "SGD",
           " plan");
  plan->check_bound(op);
  check_step_scalars(plan->place, s.lr_tensor, s.grad_scale, s.found_inf, s.sumsq);
  update(*plan);
}

// `anchor` (an empty tensor on the plan's device) only picks the dispatch key.
template <class Tables>
void adam_plan_step_(const Tensor& /*anchor*/, int64_t plan_id, double lr, std::optional<Tensor> lr_tensor,
                     double beta1, double beta2, double eps, double weight_decay, bool decoupled, bool maximize,
                     std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
                     double max_norm, double max_value) {
  const StepScalars s{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize};
  update_bound<Tables>(plan_id, PlanKind::Adam, "adam_plan_step_", s, [&](StepPlan<Tables>& plan) {
    plan.tables.adam(plan.flag, math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled}, s);
  });
}

template <class Tables>
void sgd_plan_step_(const Tensor& /*anchor*/, int64_t plan_id, double lr, std::optional<Tensor> lr_tensor,
                    double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                    std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
                    double max_norm, double max_value) {
  const StepScalars s{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize};
  update_bound<Tables>(plan_id, PlanKind::Sgd, "sgd_plan_step_", s, [&](StepPlan<Tables>& plan) {
    // the plan's kernels were chosen for momentum == 0 or != 0
    FO_CHECK((momentum != 0.0) == plan.flag, "sgd_plan_step_: plan ", plan_id, " was made for momentum ",
             plan.flag ? "!= 0" : "== 0");
    plan.tables.sgd(SgdHyper{momentum, dampening, weight_decay, nesterov}, s);
  });
}

// Lets go of the bound grads, for a step whose update did not go through the plan.
template <class Tables>
void plan_release(const Tensor& /*anchor*/, int64_t plan_id) {
  const auto plan = PlansOf<Tables>::instance().get(plan_id, "plan_release");
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->unbind();
}

template <class Tables>
void plan_free(const Tensor& /*anchor*/, int64_t plan_id) {
  PlansOf<Tables>::instance().remove(plan_id);
}

}  // namespace plan_ops

}  // namespace fusedopt

// Registers one backend's plan ops for its dispatch key (in its plan_ops.cpp).
#define FUSEDOPT_PLAN_OPS_IMPL(key, Tables)                                               \
  STABLE_TORCH_LIBRARY_IMPL(fusedopt, key, m) {                                           \
    m.impl("adam_plan_make", TORCH_BOX(&fusedopt::plan_ops::adam_plan_make<Tables>));     \
    m.impl("sgd_plan_make", TORCH_BOX(&fusedopt::plan_ops::sgd_plan_make<Tables>));       \
    m.impl("plan_bind", TORCH_BOX(&fusedopt::plan_ops::plan_bind<Tables>));               \
    m.impl("plan_grad_stats_", TORCH_BOX(&fusedopt::plan_ops::plan_grad_stats_<Tables>)); \
    m.impl("adam_plan_step_", TORCH_BOX(&fusedopt::plan_ops::adam_plan_step_<Tables>));   \
    m.impl("sgd_plan_step_", TORCH_BOX(&fusedopt::plan_ops::sgd_plan_step_<Tables>));     \
    m.impl("plan_release", TORCH_BOX(&fusedopt::plan_ops::plan_release<Tables>));         \
    m.impl("plan_free", TORCH_BOX(&fusedopt::plan_ops::plan_free<Tables>));               \
  }
