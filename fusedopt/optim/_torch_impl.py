"""torch's own optimizer implementations, run on fusedopt's state (whose layout
is torch's): for differentiable=True, for SGD's and Adagrad's sparse grads,
and for SGD's grads of another dtype than their param's (see sgd.py).

A differentiable step is part of the autograd graph (meta-learning, a learned
lr tensor): it must run as tensor ops autograd records, which fusedopt's
kernels are not. So such a step collects the same lists torch.optim's step
collects from the same state (the state layout is torch's) and calls torch's
functional ``adam``/``sgd`` with the group's flags: values, gradients and
errors are torch's. Grad mode follows ``defaults["differentiable"]``, as in
torch.optim.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.adam import adam as torch_adam
from torch.optim.sgd import sgd as torch_sgd

from .. import reference


def step(opt, closure=None):
    with torch.set_grad_enabled(bool(opt.defaults.get("differentiable"))):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in opt.param_groups:
            opt._torch_group_step(group)
    return loss


def adam_group(opt, group: dict) -> None:
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
    has_complex = False
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
        has_complex |= torch.is_complex(p)
        state = opt.state[p]
        if not state:
            opt._init_state(p, state, group)
        elif group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(state["exp_avg_sq"])
        if group["differentiable"] and state["step"].requires_grad:
            raise RuntimeError("`requires_grad` is not supported for `step` in differentiable mode")
        params.append(p)
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        if group["amsgrad"]:
            max_exp_avg_sqs.append(state["max_exp_avg_sq"])
        steps.append(state["step"])
    beta1, beta2 = group["betas"]
    torch_adam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        amsgrad=group["amsgrad"],
        has_complex=has_complex,
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        foreach=group["foreach"],
        capturable=group["capturable"],
        differentiable=group["differentiable"],
        fused=group["fused"],
        decoupled_weight_decay=group["decoupled_weight_decay"],
    )


def sgd_group(opt, group: dict) -> None:
    params = [p for p in group["params"] if p.grad is not None]
    grads = [p.grad for p in params]
    has_sparse_grad = any(g.is_sparse for g in grads)
    sgd_on(opt, group, params, grads, has_sparse_grad=has_sparse_grad, foreach=group["foreach"], fused=group["fused"])


def sgd_on(opt, group: dict, params, grads, **flags) -> None:
    """torch's SGD on the given params and grads, with the momentum buffers as
    torch keeps them in the state (also fusedopt.SGD's path for sparse grads
    and grads of another dtype)."""
    momentum = group["momentum"]
    buffers = [opt._applied_momentum_buffer(p) for p in params] if momentum != 0 else []
    torch_sgd(
        params,
        grads,
        buffers,
        weight_decay=group["weight_decay"],
        momentum=momentum,
        lr=group["lr"],
        dampening=group["dampening"],
        nesterov=group["nesterov"],
        maximize=group["maximize"],
        **flags,
    )
    if momentum != 0:
        for p, buf in zip(params, buffers):
            opt.state[p]["momentum_buffer"] = buf


def amp_grads(opt, grads: list[Tensor], amp) -> list[Tensor] | None:
    """The grads torch's own step is given for a bucket it runs (sparse grads,
    other dtypes): unscaled, clamped and clipped copies, as the kernels see
    them; None when a found_inf skips the step. Reading found_inf here is a
    host sync, the one place fusedopt reads a device value: torch.where cannot
    select between sparse tensors, and torch's own GradScaler reads found_inf
    on the host (``.item()``) before stepping any optimizer that does not take
    it, which includes torch's SGD and Adagrad with sparse grads. Only these
    grads pay it; under torch.compile it is a graph break."""
    if amp.found_inf is not None and float(amp.found_inf) != 0.0:
        return None
    inv, bound, clip, _ = reference._grad_factors(
        amp.grad_scale, amp.sumsq, opt.max_grad_norm or 0.0, False, opt.max_grad_value or 0.0
    )
    out = []
    for g in grads:
        if inv is not None:
            g = g * inv.to(g.device)
        if bound is not None:
            g = _clamped_sparse(g, bound) if g.is_sparse else reference._clamped(g, bound)
        if clip is not None:
            g = g * clip.to(g.device)
        out.append(g)
    return out


def _clamped_sparse(g: Tensor, bound: float) -> Tensor:
    """clip_grad_value_ of a sparse grad: the clamp applies to the summed values."""
    g = g.coalesce()
    return torch.sparse_coo_tensor(g.indices(), reference._clamped(g.values(), bound), g.shape)
