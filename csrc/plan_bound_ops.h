// Plan ops over grads an earlier op of the same step bound: torch's AMP idiom
// with fusedopt's classes (scaler.unscale_(opt), clip_grad_norm_(params),
// scaler.step(opt)) runs three Python calls over one step's grads. The first
// (plan_unscale_) binds them to the optimizer's plans as a step's first op
// does (bind_each); the later calls' first ops re-check what the plans hold
// instead of taking the grads across the dispatcher again (recheck_each).
// Included by plan_ops_common.h after its plan ops (which call take_binds);
// include that header, not this one.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace fusedopt {
namespace plan_ops {

// Every plan of `plan_ids` re-checks the grads it still holds from an
// earlier op of this step, as a bind checks new ones (held_lists.h: what it
// holds unchanged, the grads' dtype, shape, layout and device, their data
// pointers taken afresh): user code ran since, and may have changed them in
// place (resize_, set_, .data = ...). The Python side has checked that each
// param's .grad is still the very tensor bound. False if any plan has no
// grads bound or they no longer fit: then none of them keeps grads, and the
// op writes nothing (the Python side binds anew or takes the list ops).
template <class Backend>
bool recheck_each(const std::vector<int64_t>& plan_ids, const char* op) {
  std::vector<std::shared_ptr<NativePlan<Backend>>> plans;
  plans.reserve(plan_ids.size());
  for (int64_t id : plan_ids) {
    if (!PlansOf<Backend>::in_range(id)) return false;  // another library's: not where its grads are
    plans.push_back(PlansOf<Backend>::instance().get(id, op));
  }
  bool fits = true;
  for (const auto& plan : plans) {
    std::lock_guard<std::mutex> lock(plan->mu);
    fits = plan->bound && plan->check_bound_grads();
    if (!fits) break;
  }
  if (!fits) {
    for (const auto& plan : plans) {
      std::lock_guard<std::mutex> lock(plan->mu);
      plan->unbind();
    }
  }
  return fits;
}

// The binds an op takes first: new grads for each plan (bind_each), or, with
// plan ids but no grads, a re-check of the grads they hold (recheck_each).
template <class Backend>
bool take_binds(std::optional<StableListHandle> grads, const std::vector<int64_t>& plan_ids, const char* op) {
  if (!grads.has_value() && !plan_ids.empty()) return recheck_each<Backend>(plan_ids, op);
  return bind_each<Backend>(grads, plan_ids, op);
}

// GradScaler.unscale_ over a plan's bound grads: grads *= inv_scale,
// found_inf := 1 on any inf/nan (the list op unscale_'s kernels, on the same
// grads). Binds or re-checks first (take_binds; false, nothing written, where
// a plan does not fit). The grads stay bound for the step's later ops; the
// update releases them. clip_grad_norm_ scales by its coefficient through it
// too (its found_inf then discarded), as it does through unscale_.
template <class Backend>
bool plan_unscale_(int64_t plan_id, Tensor found_inf, Tensor inv_scale, std::optional<StableListHandle> bind_grads,
                   std::vector<int64_t> bind_plans) {
  const char* op = "plan_unscale_";
  if (!take_binds<Backend>(bind_grads, bind_plans, op)) return false;
  const auto plan = PlansOf<Backend>::instance().get(plan_id, op);
  std::lock_guard<std::mutex> lock(plan->mu);
  plan->check_bound(op);
  // the kernel takes the grads' pointers as a writer asks for them (a
  // copy-on-write grad is materialized); the plan's own are refreshed by the
  // next op's re-check, which runs first in every later call of the step
  Backend::unscale(plan->grads, found_inf, inv_scale, op);
  return true;
}

}  // namespace plan_ops
}  // namespace fusedopt
