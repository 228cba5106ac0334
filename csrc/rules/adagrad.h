// The Adagrad update rule (torch.optim.Adagrad), written once for every
// backend. Op for op torch's default (single-tensor) path, with its roundings:
// grad.add(param, alpha=weight_decay) and state_sum.addcmul_(grad, grad) are
// fused multiply-adds in torch's CPU kernels (vfma here); sqrt, add_(eps) and
// the addcdiv's quotient round per operation.
#pragma once

#include "../math/common.h"
#include "rule.h"

namespace fusedopt {
namespace math {

struct AdagradHyper {
  double lr_decay;
  double weight_decay;
  double eps;
};

struct AdagradConsts {
  float neg_clr;  // -lr / (1 + (step - 1) * lr_decay), derived as torch derives it (see consts)
  float eps;
  float l2;
  bool apply_l2;
};

}  // namespace math
}  // namespace fusedopt

FO_MATH_BEGIN

template <class V>
FO_HD FO_INLINE void adagrad_update(V& p, V g, V& sum, const AdagradConsts& c) {
  if (c.apply_l2) g = vfma(p, V(c.l2), g);  // grad.add(param, alpha=weight_decay)
  sum = vfma(g, g, sum);                    // state_sum.addcmul_(grad, grad, value=1)
  const V std = vsqrt(sum) + V(c.eps);      // state_sum.sqrt().add_(eps)
  p = p + V(c.neg_clr) * g / std;           // param.addcdiv_(grad, std, value=-clr)
}

FO_MATH_END

namespace fusedopt {

// States: sum; a float32 step per tensor.
struct AdagradRule {
  static constexpr const char* kName = "adagrad";
  static constexpr int kStates = 1;
  static constexpr int kMinStates = 1;
  static constexpr const char* kStateNames[kStates] = {"state_sums"};
  static constexpr bool kStateSigned[kStates] = {false};  // 8-bit states: the unsigned map
  static constexpr Counter kCounter = Counter::kStepF32;
  static constexpr const char* kCounterName = "steps";
  static constexpr int kHyper = 3;  // lr_decay, weight_decay, eps
  using Hyper = math::AdagradHyper;
  using Consts = math::AdagradConsts;

  FO_HD static Hyper unpack(const double* h) { return Hyper{h[0], h[1], h[2]}; }
  static int active_states(const Hyper&) { return 1; }

  FO_HD static Consts consts(const Hyper& h, const LrArg& lr, float step) {
    Consts c;
    // torch divides in Python (double) for a float lr; a float32 tensor lr
    // divides as a float32 tensor op, the double denominator rounded first
    const double denom = 1.0 + (static_cast<double>(step) - 1.0) * h.lr_decay;
    c.neg_clr = lr.f32 ? -(static_cast<float>(lr.value) / static_cast<float>(denom))
                       : static_cast<float>(-(lr.value / denom));
    c.eps = static_cast<float>(h.eps);
    c.l2 = static_cast<float>(h.weight_decay);
    c.apply_l2 = h.weight_decay != 0.0;
    return c;
  }

  template <int kActive, class V>
  FO_HD FO_INLINE static void update(V& p, V g, V (&s)[kStates], const Consts& c) {
    math::adagrad_update(p, g, s[0], c);
  }
};

}  // namespace fusedopt
