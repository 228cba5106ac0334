// Argument checks shared by the CPU and CUDA entry points. Every op validates
// all of its inputs before it writes anything, so a refused call changes nothing.
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <optional>
#include <string>
#include <vector>

#include "cpu/dtypes.h"

namespace fusedopt {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;
using TensorList = std::vector<Tensor>;

#define FO_CHECK(cond, ...) STD_TORCH_CHECK(cond, "fusedopt: ", __VA_ARGS__)

inline cpu::DType storage_dtype(const Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case ScalarType::Float:
      return cpu::DType::F32;
    case ScalarType::BFloat16:
      return cpu::DType::BF16;
    case ScalarType::Half:
      return cpu::DType::F16;
    default:
      break;
  }
  FO_CHECK(false, what, " has dtype ", torch::headeronly::toString(t.scalar_type()),
           "; the native kernels take float32, bfloat16 or float16");
  return cpu::DType::F32;
}

// All tensors of one list share a dtype: the Python side buckets them so.
inline cpu::DType list_dtype(const TensorList& ts, const char* what) {
  FO_CHECK(!ts.empty(), what, " is empty");
  const cpu::DType d = storage_dtype(ts[0], what);
  for (size_t i = 1; i < ts.size(); ++i) {
    FO_CHECK(storage_dtype(ts[i], what) == d, what, "[", i, "] has dtype ",
             torch::headeronly::toString(ts[i].scalar_type()), " but ", what, "[0] has ",
             torch::headeronly::toString(ts[0].scalar_type()), "; one call takes one dtype per list");
  }
  return d;
}

inline void check_length(const TensorList& ts, size_t n, const char* what) {
  FO_CHECK(ts.size() == n, what, " has ", ts.size(), " tensors but params has ", n);
}

inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.device() == b.device();
}

// `t` must be a dense contiguous tensor shaped like `param`, on its device.
inline void check_companion(const Tensor& param, const Tensor& t, const char* what, size_t i) {
  FO_CHECK(same_device(param, t), what, "[", i, "] is on another device than params[", i, "]");
  FO_CHECK(t.numel() == param.numel(), what, "[", i, "] has ", t.numel(), " elements but params[", i,
           "] has ", param.numel());
  FO_CHECK(t.is_contiguous(), what, "[", i, "] is not contiguous");
}

inline void check_param(const Tensor& p, size_t i) {
  FO_CHECK(p.is_contiguous(), "params[", i, "] is not contiguous");
}

// A one-element float32 tensor on `device_of`'s device (scale, found_inf, sumsq).
inline void check_scalar_tensor(const std::optional<Tensor>& t, const Tensor& device_of, const char* what) {
  if (!t.has_value()) return;
  FO_CHECK(t->numel() == 1, what, " must have one element, got ", t->numel());
  FO_CHECK(t->scalar_type() == ScalarType::Float, what, " must be float32, got ",
           torch::headeronly::toString(t->scalar_type()));
  FO_CHECK(same_device(*t, device_of), what, " is on another device than the tensors it applies to");
}

// lr may come as a one-element float32 or float64 tensor on the params' device.
inline void check_lr_tensor(const std::optional<Tensor>& t, const Tensor& device_of) {
  if (!t.has_value()) return;
  FO_CHECK(t->numel() == 1, "lr_tensor must have one element, got ", t->numel());
  FO_CHECK(t->scalar_type() == ScalarType::Float || t->scalar_type() == ScalarType::Double,
           "lr_tensor must be float32 or float64, got ", torch::headeronly::toString(t->scalar_type()));
  FO_CHECK(same_device(*t, device_of), "lr_tensor is on another device than params");
}

// Per-parameter `step` counters: one-element float32 tensors on the params' device.
inline void check_steps(const TensorList& steps, const TensorList& params) {
  check_length(steps, params.size(), "steps");
  for (size_t i = 0; i < steps.size(); ++i) {
    FO_CHECK(steps[i].numel() == 1, "steps[", i, "] must have one element");
    FO_CHECK(steps[i].scalar_type() == ScalarType::Float, "steps[", i, "] must be float32, got ",
             torch::headeronly::toString(steps[i].scalar_type()));
    FO_CHECK(same_device(steps[i], params[i]), "steps[", i, "] is on another device than params[", i, "]");
  }
}

inline void check_device_type(const TensorList& ts, bool cuda, const char* what) {
  for (size_t i = 0; i < ts.size(); ++i) {
    FO_CHECK(cuda ? ts[i].is_cuda() : ts[i].is_cpu(), what, "[", i, "] is not a ", cuda ? "CUDA" : "CPU",
             " tensor");
  }
}

}  // namespace fusedopt
