// The Lion update rule (Chen et al. 2023, "Symbolic Discovery of Optimization
// Algorithms"), with the semantics of the lion-pytorch package:
//   p *= 1 - lr * weight_decay
//   p -= lr * sign(beta1 * m + (1 - beta1) * g)
//   m = beta2 * m + (1 - beta2) * g
// Its ops (mul_, add(alpha=) as fused multiply-adds, sign_) as torch computes
// them on the CPU, so a step gives lion-pytorch's bits.
#pragma once

#include "../math/common.h"
#include "rule.h"

namespace fusedopt {
namespace math {

struct LionHyper {
  double beta1;
  double beta2;
  double weight_decay;
};

struct LionConsts {
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float neg_lr;
  float decay;  // 1 - lr * weight_decay
  bool apply_decay;
};

}  // namespace math
}  // namespace fusedopt

FO_MATH_BEGIN

template <class V>
FO_HD FO_INLINE void lion_update(V& p, V g, V& m, const LionConsts& c) {
  if (c.apply_decay) p = p * V(c.decay);  // p.data.mul_(1 - lr * wd)
  // update = exp_avg.clone().mul_(beta1).add(grad, alpha=1 - beta1).sgn_()
  const V u = vsign(vfma(g, V(c.one_minus_beta1), m * V(c.beta1)));
  p = vfma(u, V(c.neg_lr), p);  // p.add_(update, alpha=-lr)
  // exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
  m = vfma(g, V(c.one_minus_beta2), m * V(c.beta2));
}

FO_MATH_END

namespace fusedopt {

// State: exp_avg; no counter.
struct LionRule {
  static constexpr const char* kName = "lion";
  static constexpr int kStates = 1;
  static constexpr int kMinStates = 1;
  static constexpr const char* kStateNames[kStates] = {"exp_avgs"};
  static constexpr bool kStateSigned[kStates] = {true};  // 8-bit states: the signed map
  static constexpr Counter kCounter = Counter::kNone;
  static constexpr const char* kCounterName = "counters";
  static constexpr int kHyper = 3;  // beta1, beta2, weight_decay
  using Hyper = math::LionHyper;
  using Consts = math::LionConsts;

  FO_HD static Hyper unpack(const double* h) { return Hyper{h[0], h[1], h[2]}; }
  static int active_states(const Hyper&) { return 1; }

  FO_HD static Consts consts(const Hyper& h, const LrArg& lr, float) {
    Consts c;
    c.beta1 = static_cast<float>(h.beta1);
    c.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
    c.beta2 = static_cast<float>(h.beta2);
    c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
    c.neg_lr = static_cast<float>(-lr.value);
    // lion-pytorch's 1 - lr * wd: in double for a float lr, in float32 tensor
    // arithmetic (each operand rounded first) for a float32 tensor lr
    c.decay = lr.f32 ? 1.0f - static_cast<float>(lr.value) * static_cast<float>(h.weight_decay)
                     : static_cast<float>(1.0 - lr.value * h.weight_decay);
    c.apply_decay = h.weight_decay != 0.0;
    return c;
  }

  template <int kActive, class V>
  FO_HD FO_INLINE static void update(V& p, V g, V (&s)[kStates], const Consts& c) {
    math::lion_update(p, g, s[0], c);
  }
};

}  // namespace fusedopt
