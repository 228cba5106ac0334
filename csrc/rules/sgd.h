// The SGD update rule (momentum, dampening, nesterov, L2 weight decay), written
// once for every backend. Same conventions as adam.h.
#pragma once

#include "../math/common.h"
#include "rule.h"

namespace fusedopt {
namespace math {

struct SgdHyper {
  double momentum;
  double dampening;
  double weight_decay;
  bool nesterov;
};

struct SgdConsts {
  float l2;                   // weight_decay
  float momentum;
  float one_minus_dampening;  // 1 - dampening
  float neg_lr;               // -lr
  bool apply_l2;
  bool has_momentum;
  bool nesterov;
  bool first;  // the buffer has never been applied: start it from the gradient
};

}  // namespace math
}  // namespace fusedopt

FO_MATH_BEGIN

FO_HD inline SgdConsts sgd_consts(
    double lr,
    double momentum,
    double dampening,
    double weight_decay,
    bool nesterov) {
  SgdConsts c;
  c.l2 = static_cast<float>(weight_decay);
  c.momentum = static_cast<float>(momentum);
  c.one_minus_dampening = static_cast<float>(1.0 - dampening);
  c.neg_lr = static_cast<float>(-lr);
  c.apply_l2 = weight_decay != 0.0;
  c.has_momentum = momentum != 0.0;
  c.nesterov = nesterov;
  return c;
}

// `first` marks a momentum buffer that has never been applied: torch starts it
// as a copy of the (decayed) gradient, without dampening.
//
// Op for op torch.optim.SGD's default (single-tensor) path, with its roundings:
// every `x.add_(y, alpha=a)` is one fused multiply-add in torch's CPU kernels,
// so it is vfma(y, a, x) here; `buf.mul_(momentum)` rounds on its own.
template <class V>
FO_HD FO_INLINE void sgd_update(V& p, V g, V& buf, bool first, const SgdConsts& c) {
  if (c.apply_l2) g = vfma(p, V(c.l2), g);  // grad.add(param, alpha=weight_decay)
  if (c.has_momentum) {
    // buf.mul_(momentum).add_(grad, alpha=1 - dampening)
    buf = first ? g : vfma(g, V(c.one_minus_dampening), buf * V(c.momentum));
    g = c.nesterov ? vfma(buf, V(c.momentum), g) : buf;  // grad.add(buf, alpha=momentum)
  }
  p = vfma(g, V(c.neg_lr), p);  // param.add_(grad, alpha=-lr)
}

FO_MATH_END

namespace fusedopt {

// SGD as a rule: the momentum buffer when momentum != 0 (torch keeps no state
// without momentum), and a per-tensor "buffer never applied" flag.
struct SgdRule {
  static constexpr const char* kName = "sgd";
  static constexpr int kStates = 1;
  static constexpr int kMinStates = 0;
  static constexpr const char* kStateNames[kStates] = {"momentum_buffers"};
  static constexpr bool kStateSigned[kStates] = {true};  // 8-bit states: the signed map
  static constexpr Counter kCounter = Counter::kFirstBool;
  static constexpr const char* kCounterName = "momentum_first";
  static constexpr int kHyper = 4;  // momentum, dampening, weight_decay, nesterov
  using Hyper = math::SgdHyper;
  using Consts = math::SgdConsts;

  FO_HD static Hyper unpack(const double* h) { return Hyper{h[0], h[1], h[2], h[3] != 0.0}; }
  static int active_states(const Hyper& h) { return h.momentum != 0.0 ? 1 : 0; }

  FO_HD static Consts consts(const Hyper& h, const LrArg& lr, float first) {
    Consts c = math::sgd_consts(lr.value, h.momentum, h.dampening, h.weight_decay, h.nesterov);
    c.first = first != 0.0f;
    return c;
  }

  template <int kActive, class V>
  FO_HD FO_INLINE static void update(V& p, V g, V (&s)[kStates], const Consts& c) {
    if constexpr (kActive == 0) {
      V unused(0.0f);
      math::sgd_update(p, g, unused, false, c);
    } else {
      math::sgd_update(p, g, s[0], c.first, c);
    }
  }
};

}  // namespace fusedopt
