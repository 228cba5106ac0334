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
//     void prepare(PlanKind, bool flag, const CallInfo&, const std::vector<TensorList>& held,
//                  const TensorList& grads);
//     // only the grads' data pointers changed since prepare()
//     void set_grads(PlanKind, const TensorList& grads);
//   };
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <vector>

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
  std::vector<int64_t> numels;
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
    const auto& l = held.lists;
    const CallInfo d =
        kind == PlanKind::Adam
            ? check_adam_args(l[0], grads_now, l[1], l[2], l[3], l[4], l[5], flag, std::nullopt, std::nullopt,
                              std::nullopt, std::nullopt, Tables::kCuda)
            : check_sgd_args(l[0], grads_now, l[1], l[2], l[3], flag, std::nullopt, std::nullopt, std::nullopt,
                             std::nullopt, Tables::kCuda);
    tables.prepare(kind, flag, d, l, grads_now);
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
      return held.unchanged() && grads_match(grads, held, numels, place, grad_dtype);
    }
    // channels_last and the like: validated in full, tables rebuilt
    if (!held.params_same_kind() || grads.size() != numels.size() ||
        (!grads.empty() && grads[0].dtype_code() != grad_dtype)) {
      return false;
    }
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
  plan->held.record(d.layout.contiguous);
  plan->numels = d.numels;
  plan->grad_dtype = grads[0].dtype_code();
  plan->grads = std::move(grads);  // the same handles: the tables' pointers hold
  plan->bound = true;
  return PlansOf<Tables>::instance().add(std::move(plan));
}

template <class Tables>
int64_t make_adam_plan(StableListHandle params, StableListHandle grads, StableListHandle exp_avgs,
                       StableListHandle exp_avg_sqs, StableListHandle max_exp_avg_sqs, StableListHandle steps,
                       StableListHandle master_params, bool amsgrad) {
  std::vector<TensorList> held = lists_of(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params);
  TensorList step_grads{grads};
  return make_plan<Tables>(PlanKind::Adam, amsgrad, std::move(held), std::move(step_grads), "adam_plan_make");
}

template <class Tables>
int64_t make_sgd_plan(StableListHandle params, StableListHandle grads, StableListHandle momentum_buffers,
                      StableListHandle momentum_first, StableListHandle master_params, bool has_momentum) {
  std::vector<TensorList> held = lists_of(params, momentum_buffers, momentum_first, master_params);
  TensorList step_grads{grads};
  return make_plan<Tables>(PlanKind::Sgd, has_momentum, std::move(held), std::move(step_grads), "sgd_plan_make");
}

template <class Tables>
bool bind_plan(StableListHandle grads, int64_t plan_id) {
  ListArg arg{grads};  // handed to the plan, or freed
  // Another library's plan: the grads were dispatched here because they are not
  // where that plan's tensors are (a model moved by .cpu() or .cuda()), so it
  // does not fit them. An unknown id of this library's own is a bug: refused.
  if (!PlansOf<Tables>::in_range(plan_id)) return false;
  const auto plan = PlansOf<Tables>::instance().get(plan_id, "plan_bind");
  std::lock_guard<std::mutex> lock(plan->mu);
  return plan->bind(arg);
}

// `run(plan)` over a plan with grads bound (the stats pass), under its lock.
template <class Tables, class Run>
void with_bound_plan(int64_t plan_id, const char* op, Run run) {
  const auto plan = PlansOf<Tables>::instance().get(plan_id, op);
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->check_bound(op);
  run(*plan);
}

// An update over a plan of `kind` with grads bound: checks the step's scalars
// where the plan's tensors live, runs `update(plan)`, and releases the grads
// whatever happens.
template <class Tables, class Update>
void update_bound(int64_t plan_id, PlanKind kind, const char* op, const std::optional<Tensor>& lr_tensor,
                  const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                  const std::optional<Tensor>& sumsq, Update update) {
  const auto plan = PlansOf<Tables>::instance().get(plan_id, op);
  std::lock_guard<std::mutex> lock(plan->mu);
  struct Unbind {
    StepPlan<Tables>& plan;
    ~Unbind() { plan.unbind(); }
  } release{*plan};
  FO_CHECK(plan->kind == kind, op, ": plan ", plan_id, " is not an ", kind == PlanKind::Adam ? "Adam" : "SGD",
           " plan");
  plan->check_bound(op);
  check_step_scalars(plan->place, lr_tensor, grad_scale, found_inf, sumsq);
  update(*plan);
}

// An SGD plan's kernels were chosen for momentum == 0 or != 0.
inline void check_plan_momentum(bool plan_has_momentum, double momentum, int64_t plan_id) {
  FO_CHECK((momentum != 0.0) == plan_has_momentum, "sgd_plan_step_: plan ", plan_id, " was made for momentum ",
           plan_has_momentum ? "!= 0" : "== 0");
}

// Lets go of the bound grads, for a step whose update did not go through the plan.
template <class Tables>
void release_plan(int64_t plan_id) {
  const auto plan = PlansOf<Tables>::instance().get(plan_id, "plan_release");
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->unbind();
}

template <class Tables>
void free_plan(int64_t plan_id) {
  PlansOf<Tables>::instance().remove(plan_id);
}

}  // namespace fusedopt
