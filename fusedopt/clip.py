"""fusedopt.clip_grad_norm_ and clip_grad_value_: drop-ins for torch.nn.utils'.

For the L2 norm of float32/bf16/fp16 grads, clip_grad_norm_ reads every grad
once for the global sum of squares (one multi-tensor launch per device, any mix
of those dtypes) and scales them in a second multi-tensor pass, never reading a
device value on the host. clip_grad_value_ clamps such grads in one pass (torch:
clamp_min_ then clamp_max_, two). DTensor grads (FSDP2, TP) are read as their local shards, and
one all-reduce per reduction group (see _collectives.py) makes the sum global.
Other norm types, other dtypes, Partial DTensor grads and other tensor
subclasses go to torch's own implementation, which already handles them.

Both write the grads as torch's in-place ops do: version counters bumped, and a
grad listed twice processed twice, in order (see _repeats.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from functools import partial

import torch
from torch import Tensor

from . import _bulk, _collectives, _dtensor, _native_plan, _ops
from ._repeats import rounds
from ._versions import bump
from .optim import _idiom
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
    # each .grad read once, in one C loop (a Parameter's .grad is a Python-level getter)
    grads = [g for g in _bulk.attrs(parameters, "grad") if g is not None]
    norm_type = float(norm_type)
    if grads and norm_type == 2.0 and not torch.compiler.is_compiling() and _idiom.any_holding():
        # after scaler.unscale_(opt): the grads of opt's native plans, if these are exactly those
        total_norm = _clip_through_plans(grads, max_norm, error_if_nonfinite)
        if total_norm is not None:
            return total_norm
    if grads and norm_type == 2.0 and all(map(_dtensor.is_dtensor, grads)):
        if all(native_eligible(g, g, ()) and not any(p.is_partial() for p in g.placements) for g in grads):
            return _clip_dtensor_grads(grads, max_norm, error_if_nonfinite)
    if norm_type != 2.0 or not grads or not all(type(g) in _PLAIN and native_eligible(g, g, ()) for g in grads):
        # other norms, float64/complex/sparse grads, tensor subclasses: torch's own
        return torch.nn.utils.clip_grad_norm_(
            parameters, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite, foreach=foreach
        )
    with torch.no_grad():
        sumsq, by_device = _global_sumsq(grads)
        total_norm = _in_grad_dtype(sumsq.sqrt(), grads)
        _scale_by_norm_(by_device, total_norm, max_norm, error_if_nonfinite)
    return total_norm


def _clip_through_plans(grads: list[Tensor], max_norm: float, error_if_nonfinite: bool) -> Tensor | None:
    """The clip over grads a fusedopt optimizer's native plans hold since
    scaler.unscale_ (optim/_idiom.py): the same stats pass and scaling as the
    list ops, run over the plans' bound grads (re-checked by the first op)
    instead of a list crossing the dispatcher twice. None, with nothing
    written, where no plans hold exactly these grads or one no longer fits."""
    opt, held = _idiom.holding(grads)
    if held is None:
        return None
    found: dict[torch.device, Tensor] = {}
    for b in held.buckets:
        if b.device not in found:
            found[b.device] = torch.zeros(2, dtype=torch.float32, device=b.device)
    binds = held.first_binds()
    try:
        with torch.no_grad():
            for i, b in enumerate(held.buckets):
                f = found[b.device]
                b.native_plan.grad_stats_(None, f[0:1], f[1:2], 0.0, binds=binds if i == 0 else None)
    except _native_plan.Refit:
        _idiom.take(opt)  # they hold nothing now; the step binds anew
        return None
    with torch.no_grad():
        # summed over devices in the order the list path meets them
        first = grads[0].device
        total = None
        for device in dict.fromkeys(g.device for g in grads) if len(found) > 1 else found:
            part = found[device][1].to(first, non_blocking=True)
            total = part if total is None else total + part
        # a plan's grads have one dtype: each bucket's first says which
        total_norm = _in_grad_dtype(total.sqrt(), [b.grads[0] for b in held.buckets])
        coef = _clip_coef(total_norm, max_norm, error_if_nonfinite)
        coefs = {d: coef.to(d, non_blocking=True).reshape(1) for d in found}
        for b in held.buckets:
            b.native_plan.unscale_(torch.zeros(1, device=b.device), coefs[b.device])
        bump(held.grads)
    return total_norm


def _clip_coef(total_norm: Tensor, max_norm: float, error_if_nonfinite: bool) -> Tensor:
    if error_if_nonfinite and torch.logical_or(total_norm.isnan(), total_norm.isinf()):
        raise RuntimeError(
            "The total norm of order 2.0 for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    # as torch: coef = clamp(max_norm / (norm + 1e-6), max=1), applied unconditionally (no sync)
    return torch.clamp(float(max_norm) / (total_norm.float() + 1e-6), max=1.0)


def _scale_by_norm_(by_device, total_norm: Tensor, max_norm: float, error_if_nonfinite: bool) -> None:
    coef = _clip_coef(total_norm, max_norm, error_if_nonfinite)
    for device, gs in by_device.items():
        c = coef.to(device, non_blocking=True).reshape(1)
        # unscale_ is a multi-tensor "grads *= factor"; its inf flag is discarded
        for part in rounds(gs):
            _ops.ops_for(device).unscale_(part, torch.zeros(1, device=device), c)
        bump(gs)


def _in_grad_dtype(total_norm: Tensor, grads: list[Tensor]) -> Tensor:
    # torch returns the norm in the grads' dtype (computing it in that dtype too;
    # fusedopt computes in fp32 and only rounds the result), and clips by that:
    # a norm beyond the dtype's range (fp16: 65504) is inf there, so torch
    # raises for error_if_nonfinite or scales by 1/inf
    dtypes = {g.dtype for g in grads}
    return total_norm.to(dtypes.pop()) if len(dtypes) == 1 else total_norm


def _clip_dtensor_grads(grads: list[Tensor], max_norm: float, error_if_nonfinite: bool) -> Tensor:
    """The global L2 norm of DTensor grads from their local shards (one stats
    launch per device and reduction group, one all-reduce per group), then the
    local shards scaled. Returns what torch returns: the norm as a DTensor
    replicated on the first grad's mesh."""
    from torch.distributed.tensor import DTensor, Replicate

    by_part: dict[tuple, list[Tensor]] = defaultdict(list)
    by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
    reduce_groups = []
    with torch.no_grad():
        for g in grads:
            rg = _collectives.of_dtensor(g)
            lg = g._local_tensor
            by_part[(lg.device, rg)].append(lg)
            by_device[lg.device].append(lg)
            reduce_groups.append(rg)
        parts = [(d, rg, partial(_ops.ops_for(d).grad_stats_, gs)) for (d, rg), gs in by_part.items()]
        home = grads[0]._local_tensor.device
        groups = _collectives.ordered_groups(reduce_groups)
        _, sumsq = _collectives.global_stats(parts, groups, None, None, home, True)
        norm = _in_grad_dtype(sumsq.sqrt().reshape(()), grads)
        _scale_by_norm_(by_device, norm, max_norm, error_if_nonfinite)
        bump(grads)  # a DTensor's version counter is not its shard's
        mesh = grads[0].device_mesh
        return DTensor.from_local(norm, mesh, [Replicate()] * mesh.ndim, run_check=False)


def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor],
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    """Clip the gradients of an iterable of parameters at the given value, as
    ``torch.nn.utils.clip_grad_value_`` does: every grad element is clamped to
    ``[-clip_value, clip_value]`` in place (NaN stays NaN)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        parameters = list(parameters)
    value = float(clip_value)
    grads = [p.grad for p in parameters if p.grad is not None]
    if (
        not grads
        or math.isnan(value)
        or not all(type(g) in _PLAIN and native_eligible(g, g, ()) for g in grads)
    ):
        # other dtypes, sparse, tensor subclasses, a NaN bound: torch's own
        return torch.nn.utils.clip_grad_value_(parameters, value, foreach=foreach)
    if foreach:
        # torch refuses foreach=True where it has no foreach kernels; so does fusedopt
        from torch.utils._foreach_utils import _device_has_foreach_support

        for g in grads:
            if not _device_has_foreach_support(g.device):
                raise RuntimeError(
                    f"foreach=True was passed, but can't use the foreach API on {g.device.type} tensors"
                )
    by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
    for g in grads:
        by_device[g.device].append(g)
    with torch.no_grad():
        for device, gs in by_device.items():
            for part in rounds(gs):
                _ops.ops_for(device).clip_value_(part, value)
            bump(gs)
    return None
