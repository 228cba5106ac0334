"""The update rules in plain torch: the fallback where no native kernel serves a
tensor, and the oracle the tests compare the kernels with.

Each function has the signature and the semantics of the native op of the same
name (see csrc/ops.cpp), so callers can use either interchangeably:

* ``grad_scale`` is GradScaler's scale; grads are multiplied by its inverse
  (computed as torch does: ``scale.double().reciprocal().float()``).
* a nonzero ``found_inf`` skips the step: nothing is written, no step advances.
* ``max_value > 0`` clamps each unscaled grad to ``[-max_value, max_value]``,
  as clip_grad_value_ does after unscale_ in torch's idiom (``sumsq`` is then
  the sum of squares of the clamped grads, see grad_stats_);
* with ``sumsq`` given, grads are also multiplied by
  ``clamp(max_norm / (sqrt(sumsq) + 1e-6), max=1)``, as clip_grad_norm_ does.
* grads are read, never written (except by ``unscale_``, whose job that is).

The arithmetic follows torch.optim's single-tensor code operation by operation,
so for float32 and float64 tensors and a float lr the results are torch's (a
tensor lr is read as a Python float, where torch keeps it a tensor: the last
bits may differ). Half-precision
params or states are computed in float32 and rounded once at the end, as
torch's fused kernels do. Reading ``found_inf``, a tensor ``lr`` or the step
counters needs their values on the host; on a GPU that is a sync, which only
this fallback pays.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _skip(found_inf: Tensor | None) -> bool:
    return found_inf is not None and float(found_inf) != 0.0


def _inv_scale(grad_scale: Tensor) -> Tensor:
    return grad_scale.double().reciprocal().float()


def _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value=0.0):
    """(inv_scale, clamp bound, norm clip coefficient, maximize), None where unused."""
    inv = _inv_scale(grad_scale) if grad_scale is not None else None
    clip = None
    if sumsq is not None:
        norm = sumsq.float().sqrt()
        clip = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return inv, (max_value if max_value > 0 else None), clip, maximize


def _prepared_grad(grad: Tensor, dtype: torch.dtype, factors) -> Tensor:
    """The gradient the update sees: unscaled, clipped, negated for maximize,
    as a real tensor of the working dtype (complex grads are viewed as real)."""
    inv, bound, clip, maximize = factors
    if grad.is_complex():
        g = grad
    else:
        g = grad if grad.dtype == dtype else grad.to(dtype)
    if inv is not None:
        g = g * inv.to(g.device)
    if bound is not None:
        g = _clamped(g, bound)
    if clip is not None:
        g = g * clip.to(g.device)
    if maximize:
        g = -g
    return torch.view_as_real(g) if g.is_complex() else g


def _clamped(g: Tensor, bound: float) -> Tensor:
    # clip_grad_value_ is clamp_min_(-c) then clamp_max_(c); complex grads are
    # clamped as their real view (torch's clamp refuses complex tensors)
    if g.is_complex():
        return torch.view_as_complex(torch.view_as_real(g).clamp(-bound, bound))
    return g.clamp(-bound, bound)


def _lr(lr: float, lr_tensor: Tensor | None) -> float:
    return float(lr_tensor) if lr_tensor is not None else lr


class _Working:
    """The tensors one update computes on, and how to store them back.

    float32/float64 tensors are updated in place. Half-precision ones (and a
    param with an fp32 master copy) are computed in float32 copies that are
    rounded into storage once, after the update.
    """

    def __init__(self, param: Tensor, master: Tensor | None, states: list[Tensor | None]):
        self.param = param
        self.master = master
        self.stored = [master if master is not None else param, *states]
        self.work = []
        for t in self.stored:
            if t is None or t.is_complex():
                self.work.append(t if t is None else torch.view_as_real(t))
            elif t.dtype in _LOW_PRECISION:
                self.work.append(t.float())
            else:
                self.work.append(t)

    @property
    def dtype(self) -> torch.dtype:
        return self.work[0].dtype

    def store(self) -> None:
        for dst, src in zip(self.stored, self.work):
            if dst is not None and not dst.is_complex() and src is not dst:
                dst.copy_(src)
        if self.master is not None:
            self.param.copy_(self.master)


def adam_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    master_params: list[Tensor],
    lr: float,
    lr_tensor: Tensor | None,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    amsgrad: bool,
    maximize: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    sumsq: Tensor | None,
    max_norm: float,
    max_value: float = 0.0,
) -> None:
    if not params or _skip(found_inf):
        return
    lr = _lr(lr, lr_tensor)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    for i, param in enumerate(params):
        master = master_params[i] if master_params else None
        vmax = max_exp_avg_sqs[i] if amsgrad else None
        w = _Working(param, master, [exp_avgs[i], exp_avg_sqs[i], vmax])
        p, exp_avg, exp_avg_sq, max_exp_avg_sq = w.work
        grad = _prepared_grad(grads[i], w.dtype, factors)

        steps[i] += 1
        step = float(steps[i])

        if weight_decay != 0:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(p, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if amsgrad:
            torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)
        w.store()


def sgd_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    momentum_first: list[Tensor],
    master_params: list[Tensor],
    lr: float,
    lr_tensor: Tensor | None,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    sumsq: Tensor | None,
    max_norm: float,
    max_value: float = 0.0,
) -> None:
    if not params or _skip(found_inf):
        return
    lr = _lr(lr, lr_tensor)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    for i, param in enumerate(params):
        master = master_params[i] if master_params else None
        buf_store = momentum_buffers[i] if momentum != 0 else None
        w = _Working(param, master, [buf_store])
        p, buf = w.work
        grad = _prepared_grad(grads[i], w.dtype, factors)

        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        if momentum != 0:
            if bool(momentum_first[i]):
                buf.copy_(grad)
                momentum_first[i].fill_(False)
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        p.add_(grad, alpha=-lr)
        w.store()


def grad_stats_(
    grads: list[Tensor],
    grad_scale: Tensor | None,
    found_inf: Tensor,
    sumsq: Tensor,
    max_value: float = 0.0,
) -> None:
    """found_inf := 1 if any grad holds inf/nan; sumsq += sum(clamp(g * inv_scale)^2),
    the clamp to [-max_value, max_value] only when max_value > 0. The inf check
    looks at the grads themselves, before any clamp."""
    if not grads:
        return
    inv = _inv_scale(grad_scale) if grad_scale is not None else None
    total = torch.zeros((), dtype=torch.float64, device=sumsq.device)
    bad = torch.zeros((), dtype=torch.bool, device=sumsq.device)
    for g in grads:
        x = g.float() if g.dtype in _LOW_PRECISION else g
        if max_value > 0:
            bad |= ~torch.isfinite(x).all().to(bad.device)
        if inv is not None:
            x = x * inv.to(x.device)
        if max_value > 0:
            x = _clamped(x, max_value)
        if x.is_complex():
            x = torch.view_as_real(x)
        total += x.double().square().sum().to(total.device)
    sumsq.add_(total.to(sumsq.dtype))
    bad |= ~torch.isfinite(total)
    found_inf.copy_(torch.where(bad, torch.ones_like(found_inf), found_inf))


def unscale_(grads: list[Tensor], found_inf: Tensor, inv_scale: Tensor) -> None:
    """GradScaler.unscale_: grads *= inv_scale; found_inf := 1 on any inf/nan."""
    for g in grads:
        bad = ~torch.isfinite(g).all()
        found_inf.copy_(torch.where(bad.to(found_inf.device), torch.ones_like(found_inf), found_inf))
        g.mul_(inv_scale.to(g.device))


def clip_value_(grads: list[Tensor], clip_value: float) -> None:
    """clip_grad_value_: grads := clamp(grads, -clip_value, clip_value), as torch does."""
    for g in grads:
        g.clamp_(min=-clip_value, max=clip_value)
