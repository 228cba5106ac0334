// Reading the one-element control tensors (lr, scale, found_inf, sumsq) on the CPU.
#pragma once

#include <optional>

#include "../tensor_checks.h"

namespace fusedopt {
namespace cpu {

inline const float* scalar_ptr(const std::optional<Tensor>& t) {
  return t.has_value() ? static_cast<const float*>(t->data_ptr()) : nullptr;
}

// GradScaler sums per-device flags, so any nonzero value means "skip".
inline bool skip_step(const std::optional<Tensor>& found_inf) {
  return found_inf.has_value() && *scalar_ptr(found_inf) != 0.0f;
}

// A float32 lr tensor: torch's Adam derives its step constants in float32 (adam_consts).
inline bool lr_is_f32(const std::optional<Tensor>& lr_tensor) {
  return lr_tensor.has_value() && lr_tensor->scalar_type() == ScalarType::Float;
}

inline double lr_value(double lr, const std::optional<Tensor>& lr_tensor) {
  if (!lr_tensor.has_value()) return lr;
  if (lr_tensor->scalar_type() == ScalarType::Double) return *static_cast<const double*>(lr_tensor->data_ptr());
  return static_cast<double>(*static_cast<const float*>(lr_tensor->data_ptr()));
}

}  // namespace cpu
}  // namespace fusedopt
