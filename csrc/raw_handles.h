// Tensors read through their raw C-shim handles: how every op takes its
// Tensor[] arguments.
//
// torch::stable's own way in, std::vector<torch::stable::Tensor>, costs more
// than the checks an op makes on each tensor: every element wraps its handle
// in a shared_ptr (an allocation and a free per tensor per call, thousands per
// optimizer step; glibc's tcache overflows at a few thousand and frees turn
// into consolidation), and each scalar_type() maps the dtype code through a
// chain of calls into libtorch. Here an op keeps the handles the dispatcher
// made for its list (TensorList owns them), reads them through TensorRef, and
// compares dtypes and devices as the shim's codes.
#pragma once

#include <torch/csrc/stable/c/shim.h>
#include <torch/csrc/stable/stableivalue_conversions.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "python_gil.h"

#define FO_CHECK(cond, ...) STD_TORCH_CHECK(cond, "fusedopt: ", __VA_ARGS__)

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

// The shim's codes for the dtypes and devices the ops name, asked for once
// (each is a call into libtorch).
struct Codes {
  int32_t f32, bf16, f16, f64, boolean, u8, i64;
  int32_t cpu, cuda;
};

inline const Codes& codes() {
  static const Codes c{aoti_torch_dtype_float32(), aoti_torch_dtype_bfloat16(), aoti_torch_dtype_float16(),
                       aoti_torch_dtype_float64(), aoti_torch_dtype_bool(),     aoti_torch_dtype_uint8(),
                       aoti_torch_dtype_int64(),
                       aoti_torch_device_type_cpu(),
                       aoti_torch_device_type_cuda()};
  return c;
}

}  // namespace raw

using torch::headeronly::IntHeaderOnlyArrayRef;
using torch::headeronly::ScalarType;

// A tensor seen through its handle, not owned: the TensorList (or the
// torch::stable::Tensor) it comes from keeps it alive. Reads as
// torch::stable::Tensor does, one shim call each.
class TensorRef {
 public:
  TensorRef(AtenTensorHandle h) : h_(h) {}  // NOLINT: implicit, as a list's element
  TensorRef(const torch::stable::Tensor& t) : h_(t.get()) {}  // NOLINT

  AtenTensorHandle get() const { return h_; }
  int32_t dtype_code() const { return raw::dtype(h_); }
  // For messages and rare paths: the code mapped to torch's enum (several calls).
  ScalarType scalar_type() const {
    return torch::stable::detail::to<ScalarType>(torch::stable::detail::from(dtype_code()));
  }
  bool is_cpu() const { return raw::device_type(h_) == raw::codes().cpu; }
  bool is_cuda() const { return raw::device_type(h_) == raw::codes().cuda; }
  int32_t get_device_index() const { return raw::device_index(h_); }
  int64_t numel() const { return raw::numel(h_); }
  bool is_contiguous() const { return raw::contiguous(h_); }
  int64_t dim() const { return raw::get(aoti_torch_get_dim, h_, "shape"); }
  IntHeaderOnlyArrayRef sizes() const {
    return IntHeaderOnlyArrayRef(raw::get(aoti_torch_get_sizes, h_, "shape"), static_cast<size_t>(dim()));
  }
  IntHeaderOnlyArrayRef strides() const {
    return IntHeaderOnlyArrayRef(raw::get(aoti_torch_get_strides, h_, "strides"), static_cast<size_t>(dim()));
  }
  // A mutable pointer materializes a copy-on-write tensor; ask only to write.
  void* mutable_data_ptr() const { return raw::get(torch_get_mutable_data_ptr, h_, "data pointer"); }
  const void* const_data_ptr() const { return raw::data(h_); }

 private:
  AtenTensorHandle h_;
};

// Whether the tensor's shape is `want`.
inline bool has_shape(TensorRef t, const std::vector<int64_t>& want) {
  const IntHeaderOnlyArrayRef sizes = t.sizes();
  if (sizes.size() != want.size()) return false;
  for (size_t d = 0; d < want.size(); ++d) {
    if (sizes[d] != want[d]) return false;
  }
  return true;
}

// The tensors of a Tensor[] argument, each handle owned until release() or
// destruction. An op's entry point declares the argument as StableListHandle
// and hands it here at once; the dispatcher hands over the list and its
// tensors both, as torch::stable's own list conversion takes them. The buffer
// keeps its capacity, so a plan that binds as many grads every step allocates
// nothing for them.
class TensorList {
 public:
  TensorList() = default;
  explicit TensorList(StableListHandle list) { take(list); }
  TensorList(const TensorList&) = delete;
  TensorList& operator=(const TensorList&) = delete;
  TensorList(TensorList&& other) noexcept : handles_(std::move(other.handles_)) { other.handles_.clear(); }
  TensorList& operator=(TensorList&& other) noexcept {
    if (this != &other) {
      release();
      handles_ = std::move(other.handles_);
      other.handles_.clear();
    }
    return *this;
  }
  ~TensorList() { release(); }

  // Takes every tensor of `list` and frees the list itself. Whatever was held
  // before is released first.
  void take(StableListHandle list) { raw::ok(take_from(list), "list"); }

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

  // With the GIL held once for the lot (python_gil.h), not once per tensor.
  void release() {
    if (handles_.size() > 1) {
      GilForRelease gil;
      delete_all();
    } else {
      delete_all();
    }
  }

  // Hands this list's tensors to `parts`, counts[k] of them to parts[k], in
  // order, and is left empty. The counts add up to size() (checked by the caller).
  void split_into(std::vector<TensorList>& parts, const std::vector<size_t>& counts) {
    parts.resize(counts.size());
    size_t at = 0;
    for (size_t k = 0; k < counts.size(); ++k) {
      parts[k].release();
      parts[k].handles_.assign(handles_.begin() + at, handles_.begin() + at + counts[k]);
      at += counts[k];
    }
    handles_.clear();
  }

  size_t size() const { return handles_.size(); }
  bool empty() const { return handles_.empty(); }
  TensorRef operator[](size_t i) const { return handles_[i]; }
  const AtenTensorHandle* begin() const { return handles_.data(); }
  const AtenTensorHandle* end() const { return handles_.data() + handles_.size(); }

 private:
  void delete_all() {
    for (AtenTensorHandle h : handles_) aoti_torch_delete_tensor_object(h);
    handles_.clear();
  }

  std::vector<AtenTensorHandle> handles_;
};

// Tensors [start, start + n) of a list, seen in place (a rule's state list k
// within the concatenated states argument).
class TensorSlice {
 public:
  TensorSlice(const TensorList& list, size_t start, size_t n) : list_(list), start_(start), n_(n) {}
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  TensorRef operator[](size_t i) const { return list_[start_ + i]; }

 private:
  const TensorList& list_;
  size_t start_;
  size_t n_;
};

// A Tensor[] argument not yet handed to its owner: frees the list and its
// tensors if the call fails before it is (a plan_bind to no plan, say).
class ListArg {
 public:
  explicit ListArg(StableListHandle list) : list_(list) {}
  ListArg(const ListArg&) = delete;
  ListArg& operator=(const ListArg&) = delete;
  ~ListArg() {
    if (list_ != nullptr) {
      TensorList drop;
      (void)drop.take_from(list_);
    }
  }
  void hand_to(TensorList& owner) {
    StableListHandle list = list_;
    list_ = nullptr;
    owner.take(list);
  }

 private:
  StableListHandle list_;
};

}  // namespace fusedopt
