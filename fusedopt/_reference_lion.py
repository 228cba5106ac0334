"""Lion in plain torch, with the signature of the native list op ``lion_``
(fusedopt/optim/_rule.py): the fallback where no native kernel serves a
tensor, and the tests' oracle. lion-pytorch's update, op for op, on _foreach
ops (per-tensor ops for tensor subclasses); sync-free: the found_inf skip and
a tensor lr stay on the device, as in reference.py, whose helpers it uses."""

from __future__ import annotations

from . import _list_ops
from ._list_ops import by_device_and_dtype
from ._reference_lists import prepared_grads, store, working, working_dtype
from ._traced_checks import expect_traced_dtypes
from .reference import _grad_factors, _keep


def lion_(params, grads, states, counters, master_params, hyper, hyper_tensor, lr, lr_tensor, grad_scale,
          found_inf, sumsq, max_norm, max_value=0.0, maximize=False) -> None:
    """``states``: the exp_avgs; ``counters``: empty; ``hyper``: (beta1, beta2, weight_decay)."""
    if not params:
        return
    expect_traced_dtypes(grads)
    beta1, beta2, weight_decay = (float(h) for h in hyper)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    for device, (ps, gs, avgs, masters) in by_device_and_dtype([params, grads, states, master_params]):
        keep = _keep(found_inf, device)
        ops = _list_ops.ops_for(ps, gs)
        dtype = working_dtype((masters or ps)[0])
        stored = [masters or ps, avgs]
        p, m = work = [working(lst, dtype, keep) for lst in stored]
        g, _ = prepared_grads(ops, gs, dtype, factors, device)
        # complex params stay complex: sgn_ is z / |z|, as lion-pytorch takes it
        lr_own = None if lr_tensor is None else lr_tensor.to(device)
        lr_now = None if lr_tensor is None else lr_own.to(p[0].dtype)
        if weight_decay != 0:
            # p.data.mul_(1 - lr * wd): a tensor lr's factor is computed in its own dtype
            if lr_now is None:
                ops.mul_scalar_(p, 1.0 - lr * weight_decay)
            else:
                ops.mul_tensor_(p, 1.0 - lr_own * weight_decay)
        # update = exp_avg.clone().mul_(beta1).add(grad, alpha=1 - beta1).sgn_()
        update = ops.mul_scalar(m, beta1)
        ops.add_(update, g, alpha=1.0 - beta1)
        for u in update:
            u.sgn_()
        # p.add_(update, alpha=-lr)
        if lr_now is None:
            ops.add_(p, update, alpha=-lr)
        else:
            ops.addcmul_(p, update, [lr_now] * len(p), value=-1)
        # exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
        ops.mul_scalar_(m, beta2)
        ops.add_(m, g, alpha=1.0 - beta2)
        for st, w in zip(stored, work):
            store(ops, st, w, keep)
        if masters:
            store(ops, ps, masters, keep)
