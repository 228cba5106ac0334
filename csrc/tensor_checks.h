// Argument checks shared by the CPU and CUDA entry points. Every op validates
// all of its inputs before it writes anything, so a refused call changes nothing.
//
// They are written to make few calls through the C shim per tensor (each is a
// function call into libtorch): an optimizer step passes thousands of tensors.
#pragma once

#include <type_traits>

#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "cpu/dtypes.h"
#include "raw_handles.h"

namespace fusedopt {

using torch::stable::Tensor;

inline const char* dtype_str(ScalarType t) {
  return torch::headeronly::toString(t);
}

// The C shim's code for a dtype (TensorRef::dtype_code() reads a tensor's).
inline int32_t dtype_code(ScalarType t) {
  return torch::stable::detail::to<int32_t>(torch::stable::detail::from(t));
}

// Where every tensor of a call must live: the device of params[0].
struct Place {
  bool cuda;
  int32_t index;
};

inline Place place_of(TensorRef t) {
  const bool cuda = t.is_cuda();
  return {cuda, cuda ? t.get_device_index() : -1};
}

inline void check_place(TensorRef t, const Place& at, const char* what, size_t i) {
  if (at.cuda) {
    FO_CHECK(t.is_cuda() && t.get_device_index() == at.index, what, "[", i, "] is not on cuda:", at.index,
             " with the other tensors of the call");
  } else {
    FO_CHECK(t.is_cpu(), what, "[", i, "] is not a CPU tensor like the other tensors of the call");
  }
}

// The storage type of a tensor the kernels read (the shim's dtype code, as
// read once per tensor).
inline DType storage_dtype(TensorRef t, const char* what, size_t i) {
  const int32_t code = t.dtype_code();
  const raw::Codes& c = raw::codes();
  if (code == c.f32) return DType::F32;
  if (code == c.bf16) return DType::BF16;
  if (code == c.f16) return DType::F16;
  FO_CHECK(false, what, "[", i, "] has dtype ", dtype_str(t.scalar_type()),
           "; the native kernels take float32, bfloat16 or float16");
  return DType::F32;
}

// Whether a tensor's elements fill exactly numel consecutive slots of memory,
// in any dimension order (contiguous, channels_last, ...). The kernels treat
// such tensors as flat arrays; companions must then share the param's strides.
inline bool dense(TensorRef t) {
  const auto sizes = t.sizes();
  const auto strides = t.strides();
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dims longer than 1
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] != 1) dims.emplace_back(strides[d], sizes[d]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t expected = 1;
  for (const auto& [stride, size] : dims) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}

inline bool same_strides(TensorRef a, TensorRef b) {
  const auto sa = a.strides();
  const auto sb = b.strides();
  const auto sizes = a.sizes();
  if (sa.size() != sb.size()) return false;
  for (size_t d = 0; d < sa.size(); ++d) {
    if (sa[d] != sb[d] && sizes[d] != 1) return false;
  }
  return true;
}

// The params of a call, whose layout every companion list must share.
struct Layout {
  const TensorList* params = nullptr;
  std::vector<char> contiguous;  // params[i].is_contiguous()
};

// Checks one list of per-parameter tensors (params themselves, grads, a state)
// against the params' element counts, device and memory layout; returns the
// list's dtype, which every tensor of the list shares (the Python side buckets
// tensors so). With `layout` null the list is the params: each must be dense,
// and its contiguity is recorded in `record`.
template <class List>
DType check_list(
    const List& ts,
    const std::vector<int64_t>& numels,
    const Place& at,
    const char* what,
    const Layout* layout = nullptr,
    Layout* record = nullptr) {
  FO_CHECK(ts.size() == numels.size(), what, " has ", ts.size(), " tensors but params has ", numels.size());
  DType d = DType::F32;
  if constexpr (std::is_same<List, TensorList>::value) {
    if (record != nullptr) {
      record->params = &ts;
      record->contiguous.assign(ts.size(), 0);
    }
  }
  for (size_t i = 0; i < ts.size(); ++i) {
    const TensorRef t = ts[i];
    check_place(t, at, what, i);
    FO_CHECK(t.numel() == numels[i], what, "[", i, "] has ", t.numel(), " elements but params[", i, "] has ",
             numels[i]);
    const bool contiguous = t.is_contiguous();
    if (layout == nullptr) {
      FO_CHECK(contiguous || dense(t), what, "[", i, "] is neither contiguous nor densely laid out");
      if (record != nullptr) record->contiguous[i] = contiguous;
    } else if (!(contiguous && layout->contiguous[i])) {
      FO_CHECK(dense(t) && same_strides(t, (*layout->params)[i]), what, "[", i, "] is not laid out like params[",
               i, "] (both must be contiguous, or dense with the same strides)");
    }
    const DType di = storage_dtype(t, what, i);
    if (i == 0) d = di;
    FO_CHECK(di == d, what, "[", i, "] has dtype ", dtype_str(t.scalar_type()), " unlike ", what,
             "[0]; one call takes one dtype per list");
  }
  return d;
}

// A one-element tensor of `dtype` where the call runs (scale, found_inf, sumsq, lr, steps).
inline void check_scalar(TensorRef t, const Place& at, ScalarType dtype, const char* what) {
  check_place(t, at, what, 0);
  FO_CHECK(t.numel() == 1, what, " must have one element, got ", t.numel());
  FO_CHECK(t.scalar_type() == dtype, what, " must be ", dtype_str(dtype), ", got ", dtype_str(t.scalar_type()));
}

inline void check_optional_scalar(const std::optional<Tensor>& t, const Place& at, const char* what) {
  if (t.has_value()) check_scalar(*t, at, ScalarType::Float, what);
}

// lr may come as a one-element float32 or float64 tensor.
inline void check_lr_tensor(const std::optional<Tensor>& t, const Place& at) {
  if (!t.has_value()) return;
  check_place(*t, at, "lr_tensor", 0);
  FO_CHECK(t->numel() == 1, "lr_tensor must have one element, got ", t->numel());
  FO_CHECK(t->scalar_type() == ScalarType::Float || t->scalar_type() == ScalarType::Double,
           "lr_tensor must be float32 or float64, got ", dtype_str(t->scalar_type()));
}

// One-element tensors, one per parameter (step counters, momentum flags).
inline void check_per_param_scalars(
    const TensorList& ts,
    size_t n,
    const Place& at,
    ScalarType dtype,
    const char* what) {
  FO_CHECK(ts.size() == n, what, " has ", ts.size(), " tensors but params has ", n);
  const int32_t code = dtype_code(dtype);
  for (size_t i = 0; i < n; ++i) {
    check_place(ts[i], at, what, i);
    FO_CHECK(ts[i].numel() == 1, what, "[", i, "] must have one element");
    FO_CHECK(ts[i].dtype_code() == code, what, "[", i, "] must be ", dtype_str(dtype), ", got ",
             dtype_str(ts[i].scalar_type()));
  }
}

}  // namespace fusedopt
