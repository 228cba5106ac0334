// The backend-independent half of a native plan (see plan_registry.h):
// the tensors of one bucket that stay the same from step to step (params,
// states, step counters), and the cheap check that they still are.
//
// A plan is made from lists the op validated in full (as a list op validates
// its lists on every call). On later steps only the new grads arrive; what the
// plan holds is re-checked by what can change without the tensor object
// changing (p.data = ..., resize_, set_, a view of another dtype or shape
// assigned to .data, a copy-on-write clone sharing its storage): the dtype and
// shape of every held tensor, its data pointer as a writer sees it, and its
// contiguity. Anything else means the Python side rebuilds its plan, which
// makes a new native one, validated in full again (and the Python checks then
// name what is wrong, with torch's exception type).
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "raw_handles.h"
#include "tensor_checks.h"

namespace fusedopt {

// What one held tensor looked like when the plan was made.
struct HeldTensor {
  void* data;      // the pointer the plan's tables write through
  int32_t dtype;   // the shim's code (raw_handles.h)
  int32_t dim;
  size_t sizes;    // where its sizes start in HeldLists::sizes
  int64_t numel;
};

struct HeldLists {
  // params, states (the rule's active lists, concatenated), counters, master_params,
  // rounding_keys (stochastic rounding; empty when off)
  std::vector<TensorList> lists;
  std::vector<std::vector<HeldTensor>> seen;  // per list, per tensor
  std::vector<int64_t> sizes;                 // every held tensor's sizes, one after another
  // Every param contiguous: then every companion is (check_list), and the
  // per-step check is is_contiguous(); a plan over channels_last params
  // re-validates its lists in full on every step instead.
  bool contiguous = true;
  // The list of step counters whose values the host may read (a CPU plan's
  // float32 steps; -1 if none): a step count of -1 makes Adam's bias
  // correction 1 - beta1^0 = 0, which the Python side refuses as torch does
  // (with ZeroDivisionError), so a plan over one does not fit.
  int steps_list = -1;
  // Per list: one-element tensors (step counters, SGD's first-step flags). The
  // kernels read one element of each; at an unchanged address and dtype its
  // shape can only be another one-element shape, which torch's steps take
  // too, so theirs is not re-checked.
  std::vector<char> scalars;

  // Called once, when the plan is made from `lists`.
  void record(const std::vector<char>& params_contiguous, int host_steps_list, std::vector<char> scalar_lists) {
    scalars = std::move(scalar_lists);
    seen.assign(lists.size(), {});
    sizes.clear();
    for (size_t l = 0; l < lists.size(); ++l) {
      for (TensorRef t : lists[l]) {
        const IntHeaderOnlyArrayRef s = t.sizes();
        seen[l].push_back({t.mutable_data_ptr(), t.dtype_code(), static_cast<int32_t>(s.size()), sizes.size(),
                           t.numel()});
        sizes.insert(sizes.end(), s.begin(), s.end());
      }
    }
    contiguous = true;
    for (char c : params_contiguous) contiguous = contiguous && c != 0;
    steps_list = host_steps_list;
  }

  // Whether `t` has the shape `was` had (two shim calls; one for a 0-dim tensor).
  bool same_shape(TensorRef t, const HeldTensor& was) const {
    const int64_t dim = raw::get(aoti_torch_get_dim, t.get(), "shape");
    if (dim != was.dim) return false;
    if (dim == 0) return true;
    const int64_t* now = raw::get(aoti_torch_get_sizes, t.get(), "shape");
    const int64_t* then = sizes.data() + was.sizes;
    for (int64_t d = 0; d < dim; ++d) {
      if (now[d] != then[d]) return false;
    }
    return true;
  }

  // Whether every held tensor still has its dtype and shape (the Python side
  // routed and checked them by these) and no step count is -1; with
  // `same_address`, also the data pointer the tables write through and, for a
  // contiguous plan, contiguity. The pointer is asked for as a writer asks
  // (mutable_data_ptr): a copy-on-write storage (a lazy clone of the tensor
  // made since the last step) is materialized, so its pointer moves and the
  // plan is made anew rather than writing into the clone's memory too.
  // A few calls into the C shim per tensor.
  bool unchanged(bool same_address) const {
    for (size_t l = 0; l < lists.size(); ++l) {
      const TensorList& ts = lists[l];
      const std::vector<HeldTensor>& was = seen[l];
      const bool steps = static_cast<int>(l) == steps_list;
      const bool scalar = scalars[l] != 0;
      for (size_t i = 0; i < ts.size(); ++i) {
        const TensorRef t = ts[i];
        const HeldTensor& h = was[i];
        if (t.dtype_code() != h.dtype || (!scalar && !same_shape(t, h))) return false;
        if (same_address) {
          if (t.mutable_data_ptr() != h.data) return false;
          if (h.numel > 1 && !t.is_contiguous()) return false;
        }
        if (steps && *static_cast<const float*>(same_address ? h.data : t.const_data_ptr()) == -1.0f) return false;
      }
    }
    return true;
  }
};

// A step's grads, checked against the plan's params: the same device, count,
// shapes and dtype, laid out like the params. False on any mismatch (the
// Python side then rebuilds its plan, and its checks or a list op's name it).
// In the CPU library every grad is a CPU tensor: the dispatcher sends a list
// to the kernel of the highest backend among its tensors, and the CPU is the
// lowest (a CUDA grad among them takes the call to the CUDA library).
inline bool grads_match(const TensorList& grads, const HeldLists& held, const Place& at, int32_t grad_dtype) {
  const std::vector<HeldTensor>& params = held.seen[0];
  if (grads.size() != params.size()) return false;
  for (size_t i = 0; i < grads.size(); ++i) {
    const TensorRef g = grads[i];
    if (at.cuda && (raw::device_type(g.get()) != raw::codes().cuda || g.get_device_index() != at.index)) return false;
    if (g.dtype_code() != grad_dtype || !held.same_shape(g, params[i])) return false;
    if (held.contiguous && params[i].numel > 1 && !g.is_contiguous()) return false;
  }
  return true;
}

}  // namespace fusedopt
