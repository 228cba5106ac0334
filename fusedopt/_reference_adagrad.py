"""Adagrad in plain torch, with the signature of the native list op
``adagrad_`` (fusedopt/optim/_rule.py): the fallback where no native kernel
serves a tensor, and the tests' oracle. torch.optim.Adagrad's single-tensor
arithmetic, op for op, on _foreach ops (per-tensor ops for tensor subclasses);
sync-free: the found_inf skip, a tensor lr and the step counters stay on the
device, as in reference.py, whose helpers it uses."""

from __future__ import annotations

import torch

from . import _list_ops
from ._list_ops import by_device_and_dtype
from ._reference_lists import prepared_grads, real, store, working, working_dtype
from ._traced_checks import expect_traced_dtypes
from .reference import _advance_steps, _grad_factors, _keep


def adagrad_(params, grads, states, counters, master_params, hyper, hyper_tensor, lr, lr_tensor, grad_scale,
             found_inf, sumsq, max_norm, max_value=0.0, maximize=False) -> None:
    """``states``: the sums; ``counters``: the float32 steps; ``hyper``:
    (lr_decay, weight_decay, eps)."""
    if not params:
        return
    expect_traced_dtypes(grads)
    lr_decay, weight_decay, eps = (float(h) for h in hyper)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    for device, (ps, gs, sums, steps, masters) in by_device_and_dtype(
        [params, grads, states, counters, master_params]
    ):
        keep = _keep(found_inf, device)
        ops = _list_ops.ops_for(ps, gs)
        dtype = working_dtype((masters or ps)[0])
        stored = [masters or ps, sums]
        p, s = work = [working(lst, dtype, keep) for lst in stored]
        g, own = prepared_grads(ops, gs, dtype, factors, device)
        if weight_decay != 0:
            if own:
                ops.add_(g, p, alpha=weight_decay)
            else:
                g = ops.add(g, p, alpha=weight_decay)
        # complex tensors as their real views, as torch's Adagrad does
        rp, rg, rs = real(p), real(g), real(s)
        ops.addcmul_(rs, rg, rg, value=1)
        std = ops.sqrt(rs)
        ops.add_scalar_(std, eps)
        # clr = lr / (1 + (step - 1) * lr_decay) from the advanced step, per
        # tensor: for a float lr in double, as Python computes it from torch's
        # float32 step (a true division: a Python number over a tensor would be
        # a reciprocal and a product); for a tensor lr in the lr's dtype
        new_step = torch.stack([t.reshape(()) for t in steps]).to(device, torch.float64) + 1
        denom = 1 + (new_step - 1) * lr_decay
        if lr_tensor is None:
            clr = torch.full_like(denom, lr).div_(denom)
        else:
            lr_own = lr_tensor.to(device)
            clr = lr_own / denom.to(lr_own.dtype)
        neg_clr = (-clr).to(rp[0].dtype)
        # param.addcdiv_(grad, std, value=-clr), evaluated as ATen does: (grad * value) / std
        upd = [u * c for u, c in zip(rg, neg_clr.unbind(0))]
        ops.div_(upd, std)
        ops.add_(rp, upd)
        for st, w in zip(stored, work):
            store(ops, st, w, keep)
        if masters:
            store(ops, ps, masters, keep)
        _advance_steps(ops, steps, keep)
