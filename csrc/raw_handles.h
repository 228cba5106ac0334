// Tensors read through their raw C-shim handles, for the checks a step plan
// repeats on every tensor of every step (step_plan.h).
//
// torch::stable::Tensor is the convenient way in, but on this path it costs
// more than the checks themselves: each one made from a list wraps its handle
// in a shared_ptr (an allocation and a free per tensor per step), and its
// scalar_type() maps the dtype code through a chain of shim calls. Here a
// step's grads stay the handles the dispatcher made for them, owned until the
// update is done, and dtypes are compared as the shim's codes.
#pragma once

#include <torch/csrc/stable/c/shim.h>
#include <torch/csrc/stable/stableivalue_conversions.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <vector>

#include "tensor_checks.h"

namespace fusedopt {
namespace raw {

inline void ok(AOTITorchError err, const char* what) {
  FO_CHECK(err == AOTI_TORCH_SUCCESS, "reading a tensor's ", what, " through the C shim failed");
}

// One read through a shim getter: fn(handle, &out).
template <class T>
inline T get(AOTITorchError (*fn)(AtenTensorHandle, T*), AtenTensorHandle h, const char* what) {
  T out{};
  ok(fn(h, &out), what);
  return out;
}

inline int32_t dtype(AtenTensorHandle h) { return get(aoti_torch_get_dtype, h, "dtype"); }
inline int32_t device_type(AtenTensorHandle h) { return get(aoti_torch_get_device_type, h, "device"); }
inline int32_t device_index(AtenTensorHandle h) { return get(aoti_torch_get_device_index, h, "device"); }
inline int64_t numel(AtenTensorHandle h) { return get(aoti_torch_get_numel, h, "numel"); }

inline bool contiguous(AtenTensorHandle h) { return get(aoti_torch_is_contiguous, h, "layout"); }
inline const void* data(AtenTensorHandle h) { return get(torch_get_const_data_ptr, h, "data pointer"); }

// Whether the tensor's shape is `want`.
inline bool has_shape(AtenTensorHandle h, const std::vector<int64_t>& want) {
  int64_t dim = 0;
  int64_t* sizes = nullptr;
  ok(aoti_torch_get_dim(h, &dim), "shape");
  ok(aoti_torch_get_sizes(h, &sizes), "shape");
  if (static_cast<size_t>(dim) != want.size()) return false;
  for (size_t d = 0; d < want.size(); ++d) {
    if (sizes[d] != want[d]) return false;
  }
  return true;
}

// The tensors of a Tensor[] argument, each handle owned here until release()
// (or destruction). The buffer keeps its capacity, so a plan that binds the
// same number of grads every step allocates nothing for them.
class OwnedHandles {
 public:
  OwnedHandles() = default;
  OwnedHandles(const OwnedHandles&) = delete;
  OwnedHandles& operator=(const OwnedHandles&) = delete;
  ~OwnedHandles() { release(); }

  // Takes every tensor of `list` and frees the list itself (the dispatcher
  // hands both over to the kernel, as torch::stable's own list conversion
  // takes them). Whatever was held before is released first.
  void take(StableListHandle list) { ok(take_from(list), "list"); }

  // New references to `ts`, held like a taken list's.
  void hold_copies(const TensorList& ts) {
    release();
    handles_.reserve(ts.size());
    for (const Tensor& t : ts) {
      AtenTensorHandle copy = nullptr;
      ok(aoti_torch_new_tensor_handle(t.get(), &copy), "reference");
      handles_.push_back(copy);
    }
  }

  // take() without the throw, for destructors.
  AOTITorchError take_from(StableListHandle list) {
    release();
    size_t n = 0;
    AOTITorchError err = torch_list_size(list, &n);
    if (err == AOTI_TORCH_SUCCESS) {
      handles_.reserve(n);
      for (size_t i = 0; i < n && err == AOTI_TORCH_SUCCESS; ++i) {
        StableIValue element = 0;
        err = torch_list_get_item(list, i, &element);
        if (err == AOTI_TORCH_SUCCESS) handles_.push_back(torch::stable::detail::to<AtenTensorHandle>(element));
      }
    }
    torch_delete_list(list);
    return err;
  }

  void release() {
    for (AtenTensorHandle h : handles_) aoti_torch_delete_tensor_object(h);
    handles_.clear();
  }

  // New references to the held tensors, as stable::Tensors (the slow paths,
  // which validate in full).
  TensorList tensors() const {
    TensorList out;
    out.reserve(handles_.size());
    for (AtenTensorHandle h : handles_) {
      AtenTensorHandle copy = nullptr;
      ok(aoti_torch_new_tensor_handle(h, &copy), "reference");
      out.emplace_back(copy);
    }
    return out;
  }

  size_t size() const { return handles_.size(); }
  bool empty() const { return handles_.empty(); }
  AtenTensorHandle operator[](size_t i) const { return handles_[i]; }

 private:
  std::vector<AtenTensorHandle> handles_;
};

// A Tensor[] argument not yet handed to a plan: frees the list and its tensors
// if the call fails before it is (no plan of that id, say).
class ListArg {
 public:
  explicit ListArg(StableListHandle list) : list_(list) {}
  ListArg(const ListArg&) = delete;
  ListArg& operator=(const ListArg&) = delete;
  ~ListArg() {
    if (list_ != nullptr) {
      OwnedHandles drop;
      (void)drop.take_from(list_);
    }
  }
  void hand_to(OwnedHandles& owner) {
    StableListHandle list = list_;
    list_ = nullptr;
    owner.take(list);
  }

 private:
  StableListHandle list_;
};

}  // namespace raw
}  // namespace fusedopt
