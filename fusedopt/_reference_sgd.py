"""SGD in plain torch, with the signature of the native list op (see
reference.py, whose module docstring says how the fallback computes: torch's
single-tensor arithmetic on _foreach ops, sync-free, batched on the CPU)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _list_ops
from ._list_ops import by_device_and_dtype
from ._reference_lists import prepared_grads, select_into, store, store_all, working_dtype, workings
from ._traced_checks import expect_traced_dtypes
from .reference import _batches, _grad_factors, _keep, _take


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
    """``momentum_first[i]`` (a 0-dim bool on the param's device) marks a buffer
    that no applied step has written yet: the zeros fusedopt made it with. The
    first applied step makes it a copy of the grad, as torch's first step does."""
    if not params:
        return
    expect_traced_dtypes(grads)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    has_momentum = momentum != 0
    lists = [params, grads, momentum_buffers if has_momentum else [], momentum_first if has_momentum else [],
             master_params]
    for device, group in by_device_and_dtype(lists):
        _sgd_group(
            device, *group, keep=_keep(found_inf, device), factors=factors, lr=lr,
            lr_tensor=None if lr_tensor is None else lr_tensor.to(device), momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov,
        )


def _sgd_group(
    device, params, grads, buffers, first, masters, *,
    keep, factors, lr, lr_tensor, momentum, dampening, weight_decay, nesterov,
) -> None:
    ops = _list_ops.ops_for(params, grads)
    # (complex tensors as they are: torch's SGD does complex arithmetic on them)
    dtype = working_dtype((masters or params)[0])
    # one bool per tensor: its buffer not yet applied
    flags = torch.stack(first).to(device) if momentum != 0 else ()
    lists = (params, grads, buffers, masters)
    for lo, hi, piece in _batches(ops, device, lists):
        part = [_take(lst, lo, hi, piece) for lst in lists]
        _sgd_batch(
            ops, device, dtype, *part[:3], flags[lo:hi], part[3], keep=keep, factors=factors, lr=lr,
            lr_tensor=lr_tensor, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov,
        )
    if momentum != 0:
        # applied (or, with a found_inf, maybe applied): no longer first
        if keep is None:
            ops.zero_(first)
        else:
            ops.mul_tensor_(first, ~keep.to(first[0].device))


def _sgd_batch(
    ops, device, dtype, params, grads, buffers, flags, masters, *,
    keep, factors, lr, lr_tensor, momentum, dampening, weight_decay, nesterov,
) -> None:
    stored = [masters or params, buffers]
    work, copied = workings(stored, dtype, keep)
    p, buf = work
    g, own = prepared_grads(ops, grads, dtype, factors, device)

    if weight_decay != 0:
        if own:
            ops.add_(g, p, alpha=weight_decay)
        else:
            g, own = ops.add(g, p, alpha=weight_decay), True
    if momentum != 0:
        _momentum_(ops, buf, g, flags, momentum, dampening, device, dtype)
        if not nesterov:
            g = buf
        elif own:
            ops.add_(g, buf, alpha=momentum)
        else:
            g = ops.add(g, buf, alpha=momentum)
    if lr_tensor is None:
        ops.add_(p, g, alpha=-lr)
    else:
        ops.addcmul_(p, g, [lr_tensor.to(dtype)] * len(p), value=-1)

    store_all(ops, stored, work, copied, keep)
    if masters:
        store(ops, params, masters, keep)


def _momentum_(ops, buf, g, flags, momentum, dampening, device, dtype) -> None:
    """buf := g where the flag is set (torch's clone on the first step), else
    buf * momentum + (1 - dampening) * g, as torch's mul_ then add_(alpha=)."""
    if dampening == 0 and not dtype.is_complex:
        # Without a per-tensor select: an unapplied buffer (zeros) times -0.0 is
        # -0.0, and -0.0 + g is g, every bit of it (sign of zero and NaN
        # included). (Not for complex buffers: a complex product of zeros has a
        # +0.0 part whatever the factor; nor with dampening, whose 1 - dampening
        # would scale g.)
        factor = torch.full((len(flags),), momentum, dtype=dtype, device=device)
        factor.masked_fill_(flags, -0.0)
        ops.mul_(buf, factor.unbind(0))
        ops.add_(buf, g, alpha=1.0)
    else:
        new = ops.mul_scalar(buf, momentum)
        ops.add_(new, g, alpha=1 - dampening)
        for b, n, gi, f in zip(buf, new, g, flags.unbind(0)):
            select_into(b, f, gi, n)
