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

Nothing here reads a device value on the host: the found_inf skip, a tensor
lr, the step counters and SGD's first-step flags are applied on the device
(``torch.where``, 0-dim tensor arithmetic), so the functions are sync-free,
capturable in a CUDA graph, traceable by torch.compile, and run on the meta
device. With a found_inf, the update is computed on copies and written back
through ``torch.where(found_inf == 0, new, old)``: a skipped step leaves every
bit of every tensor as it was.

The arithmetic follows torch.optim's single-tensor code operation by operation,
with the per-step scalars held in 0-dim tensors instead of Python floats:

* Adam's bias corrections are float64 tensors computed with the same
  operations Python applies to floats (``pow`` of double, also for the square
  root: ATen turns ``tensor ** 0.5`` into ``sqrt``, which rounds differently
  from Python's ``x ** 0.5`` in about 1 case in 400), so they are the doubles
  torch computes on the host; a tensor lr is combined with them in its own
  dtype, as torch does. ``addcdiv_(.., value=s)`` becomes ``add_((t1 * s) /
  t2)``, the order in which ATen's kernel evaluates it. Adam's results are
  therefore torch's single-tensor results, bit for bit, for float32 and
  float64 tensors, float or tensor lr.
* ``adam_`` also takes ``beta1``/``beta2`` as 0-dim tensors: the native op
  takes floats, so tensor betas that must not be read on the host (any under
  torch.compile, CUDA ones in eager) are computed here.
* SGD with a float lr is torch's ``add_(grad, alpha=-lr)``; with a tensor lr it
  is ``addcmul_(grad, lr, value=-1)``, the device-side form torch itself uses
  for a tensor lr that requires grad (its default path reads the lr on the
  host and fuses the multiply-add, so the last bit may differ from that one).

Half-precision params or states are computed in float32 and rounded once at
the end, as torch's fused kernels do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._traced_checks import expect_traced_dtypes

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# ATen's ops themselves where dynamo would rewrite the Tensor method when
# tracing (addcmul_(value=) into a mul and an fma; before torch 2.13, any
# add(alpha=) into a mul and an add): the rewrites round differently, and a
# compiled step would not be the eager one
_addcmul_ = torch.ops.aten.addcmul_.default
_add = torch.ops.aten.add.Tensor
_add_ = torch.ops.aten.add_.Tensor


def _keep(found_inf: Tensor | None, device: torch.device) -> Tensor | None:
    """A 0-dim bool on `device`: True when the step is applied (found_inf == 0);
    None without a found_inf (always applied)."""
    if found_inf is None:
        return None
    return found_inf.reshape(()).to(device) == 0


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


class _Working:
    """The tensors one update computes on, and how to store them back.

    Without a ``keep`` flag, float32/float64 tensors are updated in place and
    half-precision ones (and a param with an fp32 master copy) in float32
    copies that are rounded into storage once, after the update. With one,
    every tensor is computed in a copy and stored through ``torch.where``, so
    a skipped step writes back the old bits.
    """

    def __init__(self, param: Tensor, master: Tensor | None, states: list[Tensor | None], keep: Tensor | None):
        self.param = param
        self.master = master
        self.keep = keep
        self.stored = [master if master is not None else param, *states]
        self.work = []
        self.in_place = []
        for t in self.stored:
            real = t if t is None or not t.is_complex() else torch.view_as_real(t)
            in_place = real is None or (real.dtype not in _LOW_PRECISION and keep is None)
            self.work.append(real if in_place else real.float() if real.dtype in _LOW_PRECISION else real.clone())
            self.in_place.append(in_place)

    @property
    def dtype(self) -> torch.dtype:
        return self.work[0].dtype

    def store(self) -> None:
        keep = self.keep
        for dst, src, in_place in zip(self.stored, self.work, self.in_place):
            if not in_place:
                real = torch.view_as_real(dst) if dst.is_complex() else dst
                real.copy_(src if keep is None else torch.where(keep, src, real))
        if self.master is not None:
            self.param.copy_(self.master if keep is None else torch.where(keep, self.master, self.param))


_HALF = 0.5


def _bias_corrections(step: Tensor, beta1: float | Tensor, beta2: float | Tensor) -> tuple[Tensor, Tensor]:
    """1 - beta1**step and sqrt(1 - beta2**step) as float64 0-dim tensors, equal
    to the doubles Python computes from float(step) (see the module docstring)."""
    s = step.double()
    b1, b2 = (b.to(s.device, torch.float64) if isinstance(b, Tensor) else b for b in (beta1, beta2))
    bias_correction1 = 1 - torch.pow(b1, s)
    bias_correction2 = 1 - torch.pow(b2, s)
    # a tensor exponent keeps pow() a pow (a Python 0.5 would become sqrt)
    half = torch.full((), _HALF, dtype=torch.float64, device=s.device)
    return bias_correction1, torch.pow(bias_correction2, half)


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
    beta1: float | Tensor,
    beta2: float | Tensor,
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
    if not params:
        return
    expect_traced_dtypes(grads)
    keep = _keep(found_inf, params[0].device)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    lr_t = lr_tensor.to(params[0].device) if lr_tensor is not None else None
    for i, param in enumerate(params):
        master = master_params[i] if master_params else None
        vmax = max_exp_avg_sqs[i] if amsgrad else None
        w = _Working(param, master, [exp_avgs[i], exp_avg_sqs[i], vmax], keep)
        p, exp_avg, exp_avg_sq, max_exp_avg_sq = w.work
        grad = _prepared_grad(grads[i], w.dtype, factors)

        steps[i].add_(1 if keep is None else keep.to(steps[i].dtype))
        bias_correction1, bias_correction2_sqrt = _bias_corrections(steps[i], beta1, beta2)

        if weight_decay != 0:
            if decoupled:
                p.mul_(1 - (lr if lr_t is None else lr_t) * weight_decay)
            else:
                grad = _add(grad, p, alpha=weight_decay)
        # tensor betas (the compiled step's route for them) stay on the device
        exp_avg.lerp_(grad, 1 - (beta1.to(grad.device, w.dtype) if isinstance(beta1, Tensor) else beta1))
        if isinstance(beta2, Tensor):
            b2 = beta2.to(grad.device, w.dtype)
            # addcmul_'s value must be a number: (value * t1) * t2, ATen's order
            exp_avg_sq.mul_(b2).add_(grad.mul(1 - b2).mul_(grad))
        else:
            _addcmul_(exp_avg_sq.mul_(beta2), grad, grad, value=1 - beta2)

        # torch: lr / bias_correction1 in double for a float lr, in the lr's dtype for a tensor
        # (a true division: `float / tensor` would multiply by the reciprocal)
        if lr_t is None:
            step_size = torch.full_like(bias_correction1, lr).div_(bias_correction1)
        else:
            step_size = lr_t / bias_correction1.to(lr_t.dtype)
        if amsgrad:
            max_exp_avg_sq.copy_(torch.maximum(max_exp_avg_sq, exp_avg_sq))
            denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt.to(w.dtype)).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt.to(w.dtype)).add_(eps)
        # p.addcdiv_(exp_avg, denom, value=-step_size), evaluated as ATen does: p + (value * t1) / t2
        p.add_(exp_avg.mul((-step_size).to(w.dtype)).div_(denom))
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
    if not params:
        return
    expect_traced_dtypes(grads)
    keep = _keep(found_inf, params[0].device)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    lr_t = lr_tensor.to(params[0].device) if lr_tensor is not None else None
    for i, param in enumerate(params):
        master = master_params[i] if master_params else None
        buf_store = momentum_buffers[i] if momentum != 0 else None
        w = _Working(param, master, [buf_store], keep)
        p, buf = w.work
        grad = _prepared_grad(grads[i], w.dtype, factors)

        if weight_decay != 0:
            grad = _add(grad, p, alpha=weight_decay)
        if momentum != 0:
            # the first applied step starts the buffer as a copy of the grad (torch's clone)
            first = momentum_first[i].to(buf.device)
            buf.copy_(torch.where(first, grad, _add_(buf.mul(momentum), grad, alpha=1 - dampening)))
            if keep is None:
                momentum_first[i].fill_(False)
            else:
                momentum_first[i].copy_(first & ~keep)
            grad = _add(grad, buf, alpha=momentum) if nesterov else buf
        if lr_t is None:
            _add_(p, grad, alpha=-lr)
        else:
            p.addcmul_(grad, lr_t, value=-1)
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
    expect_traced_dtypes(grads)
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
