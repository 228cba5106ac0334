// Native plans kept native-side between optimizer steps, found by an integer id.
//
// A plan holds references to the tensors of one bucket of an eager step
// (params, states, step counters), validated when the plan is made and again
// on every step, so that a step hands over only its new grads and a handle
// instead of a list per state. Python owns each plan: it makes it, keeps its
// id with the bucket it belongs to, and frees it when that bucket's plan is
// dropped (see fusedopt/_native_plan.py). Until then the plan holds a
// reference to every tensor it names: nothing it points at can be freed.
//
// Each library (CPU, CUDA) has a registry of its own plans, numbered from its
// own Plan::kFirstId, far apart: an id sent to the other backend (a bug) is
// refused there as unknown, never taken for one of that backend's plans.
// The registry is
// leaked on purpose: a plan still alive at exit must not release torch tensors
// from a static destructor, after libtorch itself may be gone.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "tensor_checks.h"

namespace fusedopt {

// Each library's ids lie in a block of this many, the one holding its kFirstId.
constexpr int64_t kPlanIdSpan = int64_t{1} << 40;

template <class Plan>
class PlanRegistry {
 public:
  // Whether `id` is in this registry's range (made here, alive or freed).
  static bool in_range(int64_t id) { return id >= 0 && id / kPlanIdSpan == Plan::kFirstId / kPlanIdSpan; }

  int64_t add(std::shared_ptr<Plan> plan) {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t id = next_++;
    plans_.emplace(id, std::move(plan));
    return id;
  }

  // The plan, shared: a concurrent free cannot destroy it while a step uses it.
  std::shared_ptr<Plan> get(int64_t id, const char* op) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = plans_.find(id);
    FO_CHECK(it != plans_.end(), op, ": no native plan ", id, " (freed, or made by another backend)");
    return it->second;
  }

  void remove(int64_t id) {
    std::shared_ptr<Plan> gone;  // released outside the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = plans_.find(id);
      if (it == plans_.end()) return;
      gone = std::move(it->second);
      plans_.erase(it);
    }
  }

  static PlanRegistry& instance() {
    static PlanRegistry* registry = new PlanRegistry();  // leaked: see above
    return *registry;
  }

 private:
  std::mutex mu_;
  std::unordered_map<int64_t, std::shared_ptr<Plan>> plans_;
  int64_t next_ = Plan::kFirstId;
};

}  // namespace fusedopt
