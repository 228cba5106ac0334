// AMP unscaling and clip-by-global-norm, folded into the update: the factors a
// gradient is multiplied by before the optimizer's own math.
#pragma once

#include "common.h"

namespace fusedopt {
namespace math {

// The two factors applied to every gradient element, in torch's order:
// g * inv_scale (GradScaler.unscale_), then * clip coefficient (clip_grad_norm_).
// maximize folds into the second factor; multiplying by +-1 is exact.
struct GradFactors {
  float unscale;  // 1 when no GradScaler is involved
  float clip;     // +-1 when not clipping
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

FO_HD FO_INLINE GradFactors grad_factors(
    const float* grad_scale,
    const float* sumsq,
    double max_norm,
    bool maximize) {
  GradFactors f;
  f.unscale = grad_scale ? inv_scale_of(*grad_scale) : 1.0f;
  const float coef = sumsq ? clip_coef_of(*sumsq, max_norm) : 1.0f;
  f.clip = maximize ? -coef : coef;
  return f;
}

template <class V>
FO_HD FO_INLINE V grad_prep(V g, const GradFactors& f) {
  return (g * V(f.unscale)) * V(f.clip);
}

FO_MATH_END
