// The plan ops' backend-independent half (schemas in csrc/ops.cpp; what a plan
// is: plan_registry.h and held_lists.h). A plan is made from a bucket's lists,
// validated as the rule's list op validates them; each later step binds its
// grads (the only list that crosses the dispatcher), runs the stats pass and
// the update over a prepared call the plan keeps, and lets go of the grads.
//
// A plan knows its rule only through that prepared call: a PlanCall made from
// the backend's call of the rule (RulePlanCall below), so nothing here (or in
// the backends' plan code) switches on which optimizer a plan serves. Each
// backend supplies, in its plan_ops.cpp:
//
//   struct Backend {
//     static constexpr bool kCuda;        // where its plans' tensors live
//     static constexpr int64_t kFirstId;  // its first plan id (see PlanRegistry)
//     template <class Rule> struct Call {
//       // fills the call from validated lists, grads included
//       void prepare(const CallInfo&, const RuleLists&, int active);
//       // only the grads' data pointers changed since prepare()
//       void set_grads(const TensorList& grads);
//       // the stats pass and the update over the bound grads
//       void stats(const Place&, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
//                  const Tensor& sumsq, double max_value);
//       void step(const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor,
//                 const StepScalars&);
//     };
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

#include "op_args.h"
#include "plan_registry.h"
#include "rules/registry.h"
#include "held_lists.h"

namespace fusedopt {

// A rule's prepared call, behind the interface a plan uses.
struct PlanCall {
  virtual ~PlanCall() = default;
  // Validates the held lists with these grads as the list op does and fills
  // the call. Throws on any mismatch.
  virtual CallInfo prepare(const std::vector<TensorList>& held, const TensorList& grads) = 0;
  virtual void set_grads(const TensorList& grads) = 0;
  virtual void stats(const Place& at, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
                     const Tensor& sumsq, double max_value) = 0;
  // Refuses hyperparameters that need other state lists than the plan holds.
  virtual void step(const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor,
                    const StepScalars& s) = 0;
  virtual const char* rule() const = 0;
  virtual bool host_steps() const = 0;  // the counters are float32 steps the host may read
};

template <class Backend, class Rule>
struct RulePlanCall final : PlanCall {
  int active = 0;
  std::vector<int64_t> offsets;  // stochastic rounding's, per param (else empty)
  typename Backend::template Call<Rule> call;

  RulePlanCall(int active_states, std::vector<int64_t> rounding_offsets)
      : active(active_states), offsets(std::move(rounding_offsets)) {}

  CallInfo prepare(const std::vector<TensorList>& h, const TensorList& grads) override {
    const RuleLists l{h[0], grads, h[1], h[2], h[3], h[4], offsets};
    const auto none = std::nullopt;  // the step's scalars are checked by each update
    const CallInfo d = check_rule_args<Rule>(l, active, none, none, none, none, Backend::kCuda);
    call.prepare(d, l, active);
    return d;
  }
  void set_grads(const TensorList& grads) override { call.set_grads(grads); }
  void stats(const Place& at, const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
             double max_value) override {
    call.stats(at, grad_scale, found_inf, sumsq, max_value);
  }
  void step(const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor,
            const StepScalars& s) override {
    const typename Rule::Hyper h = unpack_hyper<Rule>(hyper, "plan_step_");
    // the plan's kernels were chosen for its state lists (Adam: amsgrad or not; SGD: momentum or not)
    FO_CHECK(Rule::active_states(h) == active, "plan_step_: the plan was made for ", active, " ", Rule::kName,
             " state lists, these hyperparameters need ", Rule::active_states(h));
    call.step(hyper, hyper_tensor, s);
  }
  const char* rule() const override { return Rule::kName; }
  bool host_steps() const override { return !Backend::kCuda && Rule::kCounter == Counter::kStepF32; }
};

template <class Backend>
struct NativePlan {
  static constexpr int64_t kFirstId = Backend::kFirstId;

  std::unique_ptr<PlanCall> call;
  Place place{Backend::kCuda, -1};
  HeldLists held;
  int32_t grad_dtype = 0;  // the shim's code (raw_handles.h)
  TensorList grads;        // this step's, between the bind and the update
  bool bound = false;
  std::mutex mu;

  CallInfo prepare(const TensorList& grads_now) { return call->prepare(held.lists, grads_now); }

  // True when the grads fit this plan and are now bound; false when anything
  // the plan holds changed or the grads differ in kind, so the caller must
  // make a new plan (whose validation names a real problem).
  bool bind(ListArg& grads_now) {
    unbind();
    grads_now.hand_to(grads);
    return check_bound_grads();
  }

  // The same for grads split off a longer list (bind_each).
  bool bind(TensorList&& grads_now) {
    unbind();
    grads = std::move(grads_now);
    return check_bound_grads();
  }

  bool check_bound_grads() {
    bool fits = false;
    try {
      fits = fits_bound();
      if (fits) call->set_grads(grads);
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
    // channels_last and the like: validated in full, the call rebuilt
    if (!held.unchanged(/*same_address=*/false) || !grads_match(grads, held, place, grad_dtype)) return false;
    try {
      return same_place(prepare(grads).place, place);  // moved to another device: a new plan
    } catch (const std::exception&) {
      return false;
    }
  }

  static bool same_place(const Place& a, const Place& b) { return a.cuda == b.cuda && a.index == b.index; }

  void check_bound(const char* op) const {
    FO_CHECK(bound, op, ": the native plan has no grads bound for this step (plan_bind first)");
  }

  void unbind() {
    bound = false;
    grads.release();
  }
};

template <class Backend>
using PlansOf = PlanRegistry<NativePlan<Backend>>;

// The plan ops' entry points, one set per backend (schemas in csrc/ops.cpp).
namespace plan_ops {

// The binds a step folds into the op that runs first (plan_grad_stats_ or
// plan_step_), so that a step without clipping or AMP crosses the dispatcher
// once per bucket: each plan of `plan_ids` takes its share of `grads`, in
// order (as many as it holds params), checked as plan_bind checks it. They
// all run before the op writes anything; false if any plan does not fit
// (then none of them keeps grads, and the op writes nothing: the Python side
// rebuilds its buckets, fully validated, and starts the step again).
template <class Backend>
bool bind_each(std::optional<StableListHandle> grads, const std::vector<int64_t>& plan_ids, const char* op) {
  if (plan_ids.size() == 1 && grads.has_value()) {
    // One plan (the usual step: one bucket): its grads go straight into the
    // plan's list, whose buffer is kept from step to step, as plan_bind does.
    // Splitting them off a list of their own cost ~0.05 us per tensor more.
    ListArg arg{*grads};  // handed to the plan, or freed
    if (!PlansOf<Backend>::in_range(plan_ids[0])) return false;
    const auto plan = PlansOf<Backend>::instance().get(plan_ids[0], op);
    std::lock_guard<std::mutex> lock(plan->mu);
    return plan->bind(arg);
  }
  TensorList all;
  if (grads.has_value()) all.take(*grads);  // owned (and freed) whatever happens
  if (plan_ids.empty()) {
    FO_CHECK(all.empty(), op, ": bind_grads given without bind_plans");
    return true;
  }
  std::vector<std::shared_ptr<NativePlan<Backend>>> plans;
  std::vector<size_t> counts;
  size_t total = 0;
  for (int64_t id : plan_ids) {
    // another library's plan: these grads are not where its tensors are
    if (!PlansOf<Backend>::in_range(id)) return false;
    plans.push_back(PlansOf<Backend>::instance().get(id, op));
    counts.push_back(plans.back()->held.seen[0].size());
    total += counts.back();
  }
  if (total != all.size()) return false;
  std::vector<TensorList> parts;
  all.split_into(parts, counts);
  for (size_t k = 0; k < plans.size(); ++k) {
    bool fits = false;
    {
      std::lock_guard<std::mutex> lock(plans[k]->mu);
      fits = plans[k]->bind(std::move(parts[k]));
    }
    if (!fits) {
      for (size_t j = 0; j < k; ++j) {
        std::lock_guard<std::mutex> lock(plans[j]->mu);
        plans[j]->unbind();
      }
      return false;
    }
  }
  return true;
}

// bind_each, or a re-check of grads an earlier op bound (plan_bound_ops.h).
template <class Backend>
bool take_binds(std::optional<StableListHandle> grads, const std::vector<int64_t>& plan_ids, const char* op);

// A new plan of `Rule` over the held lists, made with the first step's grads bound.
template <class Backend, class Rule>
int64_t plan_make(StableListHandle params, StableListHandle grads, StableListHandle states, StableListHandle counters,
                  StableListHandle master_params, std::vector<double> hyper,
                  std::optional<StableListHandle> rounding_keys, std::optional<std::vector<int64_t>> rounding_offsets) {
  const char* op = "plan_make";
  std::vector<TensorList> held;
  held.reserve(5);
  held.emplace_back(params);
  held.emplace_back(states);
  held.emplace_back(counters);
  held.emplace_back(master_params);
  held.emplace_back();
  if (rounding_keys.has_value()) held.back().take(*rounding_keys);
  const int active = Rule::active_states(unpack_hyper<Rule>(hyper, op));
  TensorList step_grads{grads};
  FO_CHECK(!held[0].empty(), Rule::kName, "_plan_make: params is empty");
  auto plan = std::make_shared<NativePlan<Backend>>();
  plan->call = std::make_unique<RulePlanCall<Backend, Rule>>(active, rounding_offsets.value_or(std::vector<int64_t>{}));
  plan->held.lists = std::move(held);
  const CallInfo d = plan->prepare(step_grads);
  plan->place = d.place;
  // the counters are one-element tensors; a CPU plan's float32 steps can be
  // read on the host (see HeldLists::steps_list)
  std::vector<char> scalars{0, 0, 1, 0, 0};
  plan->held.record(d.layout.contiguous, plan->call->host_steps() ? 2 : -1, std::move(scalars));
  plan->grad_dtype = step_grads[0].dtype_code();
  plan->grads = std::move(step_grads);  // the same handles: the call's pointers hold
  plan->bound = true;
  return PlansOf<Backend>::instance().add(std::move(plan));
}

template <class Backend>
bool plan_bind(StableListHandle grads, int64_t plan_id) {
  ListArg arg{grads};  // handed to the plan, or freed
  // Another library's plan: the grads were dispatched here because they are not
  // where that plan's tensors are (a model moved by .cpu() or .cuda()), so it
  // does not fit them. An unknown id of this library's own is a bug: refused.
  if (!PlansOf<Backend>::in_range(plan_id)) return false;
  const auto plan = PlansOf<Backend>::instance().get(plan_id, "plan_bind");
  std::lock_guard<std::mutex> lock(plan->mu);
  return plan->bind(arg);
}

// (With bind_grads and bind_plans: binds them first, see bind_each; false,
// with nothing written, where one does not fit.)
template <class Backend>
bool plan_grad_stats_(int64_t plan_id, std::optional<Tensor> grad_scale, Tensor found_inf, Tensor sumsq,
                      double max_value, std::optional<StableListHandle> bind_grads, std::vector<int64_t> bind_plans) {
  if (!take_binds<Backend>(bind_grads, bind_plans, "plan_grad_stats_")) return false;
  const auto plan = PlansOf<Backend>::instance().get(plan_id, "plan_grad_stats_");
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->check_bound("plan_grad_stats_");
  plan->call->stats(plan->place, grad_scale, found_inf, sumsq, max_value);
  return true;
}

// The rule's update over a plan with grads bound: checks the step's scalars
// where the plan's tensors live, runs it, and releases the grads whatever
// happens. `anchor` (an empty tensor on the plan's device) only picks the
// dispatch key.
// (With bind_grads and bind_plans: binds them first, see bind_each; false,
// with nothing written, where one does not fit.)
template <class Backend>
bool plan_step_(const Tensor& /*anchor*/, int64_t plan_id, std::vector<double> hyper,
                std::optional<Tensor> hyper_tensor, double lr, std::optional<Tensor> lr_tensor,
                std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
                double max_norm, double max_value, bool maximize, std::optional<StableListHandle> bind_grads,
                std::vector<int64_t> bind_plans) {
  const char* op = "plan_step_";
  if (!take_binds<Backend>(bind_grads, bind_plans, op)) return false;
  const auto plan = PlansOf<Backend>::instance().get(plan_id, op);
  std::lock_guard<std::mutex> lock(plan->mu);
  struct Unbind {
    NativePlan<Backend>& plan;
    ~Unbind() { plan.unbind(); }
  } release{*plan};
  plan->check_bound(op);
  check_step_scalars(plan->place, lr_tensor, grad_scale, found_inf, sumsq);
  const StepScalars s{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize};
  plan->call->step(hyper, hyper_tensor, s);
  return true;
}

// Lets go of the bound grads, for a step whose update did not go through the plan.
template <class Backend>
void plan_release(const Tensor& /*anchor*/, int64_t plan_id) {
  const auto plan = PlansOf<Backend>::instance().get(plan_id, "plan_release");
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->unbind();
}

template <class Backend>
void plan_free(const Tensor& /*anchor*/, int64_t plan_id) {
  PlansOf<Backend>::instance().remove(plan_id);
}

}  // namespace plan_ops

}  // namespace fusedopt

#include "plan_bound_ops.h"

// Registers one backend's plan ops for its dispatch key (in its plan_ops.cpp).
#define FO_RULE_PLAN_MAKE_IMPL(name, Rule) \
  m.impl(#name "_plan_make", TORCH_BOX((&fusedopt::plan_ops::plan_make<FO_PLAN_BACKEND, Rule>)));
#define FUSEDOPT_PLAN_OPS_IMPL(key, Backend)                                               \
  STABLE_TORCH_LIBRARY_IMPL(fusedopt, key, m) {                                            \
    FUSEDOPT_RULES(FO_RULE_PLAN_MAKE_IMPL)                                                 \
    m.impl("plan_bind", TORCH_BOX(&fusedopt::plan_ops::plan_bind<Backend>));               \
    m.impl("plan_grad_stats_", TORCH_BOX(&fusedopt::plan_ops::plan_grad_stats_<Backend>)); \
    m.impl("plan_step_", TORCH_BOX(&fusedopt::plan_ops::plan_step_<Backend>));             \
    m.impl("plan_unscale_", TORCH_BOX(&fusedopt::plan_ops::plan_unscale_<Backend>));       \
    m.impl("plan_release", TORCH_BOX(&fusedopt::plan_ops::plan_release<Backend>));         \
    m.impl("plan_free", TORCH_BOX(&fusedopt::plan_ops::plan_free<Backend>));               \
  }
