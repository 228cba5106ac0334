// AMP unscaling and clip-by-global-norm, folded into the update: the factors a
// gradient is multiplied by before the optimizer's own math.
#pragma once

#include "common.h"

namespace fusedopt {
namespace math {

// What every gradient element goes through, in torch's idiom order:
// g * inv_scale (GradScaler.unscale_), clamped to [-max_value, max_value]
// (clip_grad_value_), then * the norm's clip coefficient (clip_grad_norm_, whose
// norm is of the clamped grads). maximize folds into the last factor;
// multiplying by +-1 is exact, and the clamp is symmetric.
struct GradFactors {
  float unscale;    // 1 when no GradScaler is involved
  float max_value;  // +inf when not clipping by value (clamping to +-inf is exact)
  float clip;       // +-1 when not clipping by norm
};

}  // namespace math
}  // namespace fusedopt

FO_MATH_BEGIN

// GradScaler's inverse scale: torch computes scale.double().reciprocal().float().
FO_HD FO_INLINE float inv_scale_of(float scale) {
  return static_cast<float>(1.0 / static_cast<double>(scale));
}

// torch.nn.utils.clip_grad_norm_: clamp(max_norm / (norm + 1e-6), max=1), in fp32.
// Python's `float / tensor` is evaluated by torch as reciprocal(tensor) * float.
FO_HD FO_INLINE float clip_coef_of(float sumsq, double max_norm) {
  const float coef = (1.0f / (sqrtf(sumsq) + 1e-6f)) * static_cast<float>(max_norm);
  // Written so that a NaN norm yields NaN, as torch.clamp does.
  return coef > 1.0f ? 1.0f : coef;
}

// The ops' max_value argument: 0 (or less) means no clamping.
FO_HD FO_INLINE float clamp_bound_of(double max_value) {
  return max_value > 0.0 ? static_cast<float>(max_value) : INFINITY;
}

FO_HD FO_INLINE GradFactors grad_factors(
    const float* grad_scale,
    const float* sumsq,
    double max_norm,
    double max_value,
    bool maximize) {
  GradFactors f;
  f.unscale = grad_scale ? inv_scale_of(*grad_scale) : 1.0f;
  f.max_value = clamp_bound_of(max_value);
  const float coef = sumsq ? clip_coef_of(*sumsq, max_norm) : 1.0f;
  f.clip = maximize ? -coef : coef;
  return f;
}

template <class V>
FO_HD FO_INLINE V grad_prep(V g, const GradFactors& f) {
  return vclamp(g * V(f.unscale), V(-f.max_value), V(f.max_value)) * V(f.clip);
}

FO_MATH_END
