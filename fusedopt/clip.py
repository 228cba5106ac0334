"""fusedopt.clip_grad_norm_: a drop-in for torch.nn.utils.clip_grad_norm_.

For the L2 norm of float32/bf16/fp16 grads it reads every grad once for the
global sum of squares (one multi-tensor launch per device, any mix of those
dtypes) and scales them in a second multi-tensor pass, never reading a device
value on the host. Other norm types, other dtypes and tensor subclasses such as
DTensor go to torch's own implementation, which already handles them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor

from . import _ops
from .optim._base import native_eligible

_PLAIN = (Tensor, torch.nn.Parameter)


def _global_sumsq(grads: list[Tensor]) -> tuple[Tensor, dict[torch.device, list[Tensor]]]:
    """Sum of squares of all grads (float32/bf16/fp16, dense), on the first grad's device."""
    by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
    for g in grads:
        by_device[g.device].append(g)
    first = grads[0].device
    total = None
    for device, gs in by_device.items():
        found = torch.zeros(2, dtype=torch.float32, device=device)
        _ops.ops_for(device).grad_stats_(gs, None, found[0:1], found[1:2])
        part = found[1].to(first, non_blocking=True)
        total = part if total is None else total + part
    return total, by_device


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradient norm of an iterable of parameters, as
    ``torch.nn.utils.clip_grad_norm_`` does, and return the total norm.

    The norm is computed over the norms of all gradients together, as if they
    were concatenated into a single vector; gradients are modified in place.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if norm_type != 2.0 or not grads or not all(type(g) in _PLAIN and native_eligible(g, g, ()) for g in grads):
        # other norms, float64/complex/sparse grads, tensor subclasses: torch's own
        return torch.nn.utils.clip_grad_norm_(
            parameters, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite, foreach=foreach
        )
    with torch.no_grad():
        sumsq, by_device = _global_sumsq(grads)
        total_norm = sumsq.sqrt()
        if error_if_nonfinite and torch.logical_or(total_norm.isnan(), total_norm.isinf()):
            raise RuntimeError(
                f"The total norm of order {norm_type} for gradients from "
                "`parameters` is non-finite, so it cannot be clipped. To disable "
                "this error and scale the gradients by the non-finite norm anyway, "
                "set `error_if_nonfinite=False`"
            )
        # as torch: coef = clamp(max_norm / (norm + 1e-6), max=1), applied unconditionally (no sync)
        coef = torch.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0)
        for device, gs in by_device.items():
            c = coef.to(device, non_blocking=True).reshape(1)
            # unscale_ is a multi-tensor "grads *= factor"; its inf flag is discarded
            _ops.ops_for(device).unscale_(gs, torch.zeros(1, device=device), c)
    # torch returns the norm in the grads' dtype (computing it in that dtype too;
    # fusedopt computes in fp32 and only rounds the result)
    dtypes = {g.dtype for g in grads}
    return total_norm.to(dtypes.pop()) if len(dtypes) == 1 else total_norm
