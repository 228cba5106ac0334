// The SGD update rule (momentum, dampening, nesterov, L2 weight decay), written
// once for every backend. Same conventions as adam.h.
#pragma once

#include "common.h"

namespace fusedopt {
namespace math {

struct SgdConsts {
  float l2;                   // weight_decay
  float momentum;
  float one_minus_dampening;  // 1 - dampening
  float neg_lr;               // -lr
  bool apply_l2;
  bool has_momentum;
  bool nesterov;
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
