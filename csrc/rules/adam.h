// The Adam/AdamW update rule, written once for every backend.
//
// `V` is `float` on CUDA and in scalar code, or a SIMD vector of floats on the
// CPU; it needs + - * /, construction from float, vfma, vsqrt and vmax. The
// operations and their roundings are those of torch.optim.Adam's default
// (single-tensor) path on the CPU, op for op: where torch's kernel rounds once
// (`add_` with alpha, `addcmul_`, `lerp_`: a fused multiply-add) this calls vfma,
// everything else rounds per operation (builds use no FMA contraction), so every
// backend and instruction set computes the same bits as torch's op-by-op result.
#pragma once

#include "../math/common.h"
#include "rule.h"

namespace fusedopt {
namespace math {

struct AdamHyper {
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  bool decoupled;  // AdamW: p *= 1 - lr*wd; Adam: g += wd*p
  bool amsgrad;    // a third state: the running max of exp_avg_sq
};

// Per-tensor constants of one step, computed from the step count in double and
// rounded to float where torch hands a Python float to a float32 tensor op.
struct AdamConsts {
  float lerp_w;     // 1 - beta1: exp_avg.lerp_(grad, 1 - beta1)
  float lerp_w_m1;  // lerp_w - 1 in float (exact for w >= 0.5), torch's coefficient for w >= 0.5
  bool lerp_small;  // |w| < 0.5 selects torch's first lerp formula
  float beta2;
  float one_minus_beta2;
  float eps;
  float bc2_sqrt;       // sqrt(1 - beta2^step)
  float neg_step_size;  // -lr / (1 - beta1^step)
  float l2;             // coupled weight decay
  float decay;          // 1 - lr * weight_decay (decoupled)
  bool apply_l2;
  bool apply_decay;
};

}  // namespace math
}  // namespace fusedopt

FO_MATH_BEGIN

// `step` is the already-advanced step count (float32, as torch stores it).
// `lr_f32` says the lr came as a float32 tensor: torch's default path then
// derives the step size and the decoupled decay factor from it in float32
// tensor arithmetic (lr / bias_correction1, 1 - lr * weight_decay, each operand
// rounded to float32 first); from a Python float (or a float64 tensor) in double.
FO_HD inline AdamConsts adam_consts(const AdamHyper& h, double lr, bool lr_f32, float step) {
  AdamConsts c;
  const double s = static_cast<double>(step);
  const double bc1 = 1.0 - pow(h.beta1, s);
  const double bc2 = 1.0 - pow(h.beta2, s);
  c.lerp_w = static_cast<float>(1.0 - h.beta1);
  c.lerp_w_m1 = c.lerp_w - 1.0f;
  c.lerp_small = fabsf(c.lerp_w) < 0.5f;
  c.beta2 = static_cast<float>(h.beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  c.eps = static_cast<float>(h.eps);
  c.bc2_sqrt = static_cast<float>(sqrt(bc2));
  if (lr_f32) {
    const float lr_f = static_cast<float>(lr);
    c.neg_step_size = -(lr_f / static_cast<float>(bc1));
    c.decay = 1.0f - lr_f * static_cast<float>(h.weight_decay);
  } else {
    c.neg_step_size = static_cast<float>(-(lr / bc1));
    c.decay = static_cast<float>(1.0 - lr * h.weight_decay);
  }
  const bool has_wd = h.weight_decay != 0.0;
  c.apply_decay = has_wd && h.decoupled;
  c.apply_l2 = has_wd && !h.decoupled;
  c.l2 = static_cast<float>(h.weight_decay);
  return c;
}

// One element (or one vector of elements) of the update. `g` arrives already
// unscaled, clipped and sign-flipped for maximize (see grad_prep in clip.h).
template <bool kAmsgrad, class V>
FO_HD FO_INLINE void adam_update(
    V& p,
    V g,
    V& m,
    V& v,
    V& vmax_state,
    const AdamConsts& c) {
  if (c.apply_decay) p = p * V(c.decay);          // param.mul_(1 - lr * weight_decay)
  if (c.apply_l2) g = vfma(p, V(c.l2), g);        // grad.add(param, alpha=weight_decay)
  // exp_avg.lerp_(grad, w): torch's CPU lerp is fma(w, g - m, m) for |w| < 0.5,
  // else fma(w - 1, g - m, g)
  const V d = g - m;
  m = c.lerp_small ? vfma(V(c.lerp_w), d, m) : vfma(V(c.lerp_w_m1), d, g);
  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): the mul rounds on
  // its own; addcmul is fma(value * grad, grad, exp_avg_sq)
  v = vfma(V(c.one_minus_beta2) * g, g, v * V(c.beta2));
  V second = v;
  if (kAmsgrad) {
    vmax_state = vmax(vmax_state, v);
    second = vmax_state;
  }
  // (sqrt(v) / bias_correction2_sqrt).add_(eps), then param.addcdiv_(exp_avg,
  // denom, value=-step_size): a quotient cannot fuse, so both round per operation
  const V denom = vsqrt(second) / V(c.bc2_sqrt) + V(c.eps);
  p = p + V(c.neg_step_size) * m / denom;
}

FO_MATH_END

namespace fusedopt {

// Adam/AdamW as a rule: states exp_avg, exp_avg_sq (and max_exp_avg_sq with
// amsgrad); a float32 step per tensor.
struct AdamRule {
  static constexpr const char* kName = "adam";
  static constexpr int kStates = 3;
  static constexpr int kMinStates = 2;
  static constexpr const char* kStateNames[kStates] = {"exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
  static constexpr bool kStateSigned[kStates] = {true, false, false};  // 8-bit states: which map
  static constexpr Counter kCounter = Counter::kStepF32;
  static constexpr const char* kCounterName = "steps";
  static constexpr int kHyper = 6;  // beta1, beta2, eps, weight_decay, decoupled, amsgrad
  using Hyper = math::AdamHyper;
  using Consts = math::AdamConsts;

  FO_HD static Hyper unpack(const double* h) { return Hyper{h[0], h[1], h[2], h[3], h[4] != 0.0, h[5] != 0.0}; }
  static int active_states(const Hyper& h) { return h.amsgrad ? 3 : 2; }

  FO_HD static Consts consts(const Hyper& h, const LrArg& lr, float step) {
    return math::adam_consts(h, lr.value, lr.f32, step);
  }

  template <int kActive, class V>
  FO_HD FO_INLINE static void update(V& p, V g, V (&s)[kStates], const Consts& c) {
    math::adam_update<kActive == 3>(p, g, s[0], s[1], s[2], c);
  }
};

}  // namespace fusedopt
