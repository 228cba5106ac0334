// The CUDA side of an op call: the device guard, torch's current stream, and
// turning a failed launch into a Python error.
#pragma once

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include <string>
#include <vector>

#include "../tensor_checks.h"

namespace fusedopt {
namespace cuda {

// torch's current stream on `device`, through the C shim (defined by
// libtorch_cuda; this library is only loaded where torch has CUDA).
inline void* current_stream(int32_t device) {
  void* stream = nullptr;
  FO_CHECK(aoti_torch_get_current_cuda_stream(device, &stream) == AOTI_TORCH_SUCCESS,
           "could not get the current CUDA stream of device ", device);
  return stream;
}

inline void check_launch(const char* err, const char* op) {
  FO_CHECK(err == nullptr, op, ": CUDA error at or before this op's launch: ", err ? err : "");
}

// Data pointers of a tensor list, gathered once.
inline std::vector<void*> mutable_ptrs(const TensorList& ts) {
  std::vector<void*> out;
  out.reserve(ts.size());
  for (TensorRef t : ts) out.push_back(t.mutable_data_ptr());
  return out;
}

inline std::vector<const void*> const_ptrs(const TensorList& ts) {
  std::vector<const void*> out;
  out.reserve(ts.size());
  for (TensorRef t : ts) out.push_back(t.const_data_ptr());
  return out;
}

inline const float* optional_ptr(const std::optional<Tensor>& t) {
  return t.has_value() ? static_cast<const float*>(t->const_data_ptr()) : nullptr;
}

}  // namespace cuda
}  // namespace fusedopt
