// The backend-independent half of a native step plan (see plan_registry.h):
// the tensors of one bucket that stay the same from step to step (params,
// states, step counters), and the cheap check that they still are.
//
// A plan is made from lists the op validated in full (as a list op validates
// its lists on every call). On later steps only the new grads arrive; what the
// plan holds is re-checked by what can change without the tensor object
// changing (p.data = ..., resize_, set_, a transposed view assigned to .data):
// the data pointer of every held tensor, and the dtype, shape and contiguity
// of the params and of every tensor with elements. Anything else means the
// Python side rebuilds its plan, which makes a new native one, validated in
// full again.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "raw_handles.h"
#include "tensor_checks.h"

namespace fusedopt {

enum class PlanKind : uint8_t { Adam, Sgd };

// What one held tensor looked like when the plan was made.
struct HeldTensor {
  const void* data;
  int64_t numel;
};

struct HeldLists {
  // Adam: params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params
  // SGD:  params, momentum_buffers, momentum_first, master_params
  std::vector<TensorList> lists;
  std::vector<std::vector<HeldTensor>> seen;  // per list, per tensor
  std::vector<std::vector<int64_t>> shapes;   // the params'
  int32_t param_dtype = 0;                     // the shim's code (raw_handles.h)
  // Every param contiguous: then every companion is (check_list), and the
  // per-step check is is_contiguous(); a plan over channels_last params
  // re-validates its lists in full on every step instead.
  bool contiguous = true;

  // Called once, when the plan is made from `lists`.
  void record(const std::vector<char>& params_contiguous) {
    seen.assign(lists.size(), {});
    for (size_t l = 0; l < lists.size(); ++l) {
      for (TensorRef t : lists[l]) seen[l].push_back({t.const_data_ptr(), t.numel()});
    }
    shapes.clear();
    for (TensorRef p : lists[0]) {
      const auto s = p.sizes();
      shapes.emplace_back(s.begin(), s.end());
    }
    param_dtype = lists[0].empty() ? 0 : lists[0][0].dtype_code();
    contiguous = true;
    for (char c : params_contiguous) contiguous = contiguous && c != 0;
  }

  // Whether the params still have the dtype and shape the plan was made for
  // (the Python side routed them by these, and made their states so).
  bool params_same_kind() const {
    const TensorList& params = lists[0];
    for (size_t i = 0; i < params.size(); ++i) {
      const TensorRef p = params[i];
      if (p.dtype_code() != param_dtype || !has_shape(p, shapes[i])) return false;
    }
    return true;
  }

  // Whether every held tensor is still what the plan was made from (for a
  // contiguous plan; see `contiguous`). A few calls into the C shim per tensor.
  bool unchanged() const {
    if (!params_same_kind()) return false;
    for (size_t l = 0; l < lists.size(); ++l) {
      const TensorList& ts = lists[l];
      const std::vector<HeldTensor>& was = seen[l];
      for (size_t i = 0; i < ts.size(); ++i) {
        const TensorRef t = ts[i];
        if (t.const_data_ptr() != was[i].data) return false;
        if (was[i].numel > 1 && (t.numel() != was[i].numel || !t.is_contiguous())) return false;
      }
    }
    return true;
  }
};

// A step's grads, checked against the plan's params: the same device, count,
// element counts and dtype, laid out like the params. False on any mismatch
// (the Python side then rebuilds its plan, and a list op's checks name it).
inline bool grads_match(const TensorList& grads, const HeldLists& held, const std::vector<int64_t>& numels,
                        const Place& at, int32_t grad_dtype) {
  if (grads.size() != numels.size()) return false;
  const int32_t device = at.cuda ? raw::codes().cuda : raw::codes().cpu;
  for (size_t i = 0; i < grads.size(); ++i) {
    const TensorRef g = grads[i];
    if (raw::device_type(g.get()) != device || (at.cuda && g.get_device_index() != at.index)) return false;
    if (g.numel() != numels[i] || g.dtype_code() != grad_dtype) return false;
    if (held.contiguous && numels[i] > 1 && !g.is_contiguous()) return false;
  }
  return true;
}

}  // namespace fusedopt
