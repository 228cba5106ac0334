"""The step's control tensors per device: the AMP scale and found_inf it was
handed, and, when it clips or finds infs itself, the global stats pass.

The stats pass (``grad_stats_``) reads every grad once and yields found_inf and
the global sum of squares of the unscaled grads, summed over the ranks that
share them (see fusedopt/_collectives.py). The update then applies ``1/scale``
and the clip coefficient to each grad element as it reads it, and skips
everything on the device when found_inf is set. Nothing here reads a device
value on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from .. import _collectives, _ops
from .._collectives import _on


@dataclass
class DeviceAmp:
    """The step's control tensors as seen by one device (all on that device)."""

    grad_scale: Tensor | None = None
    found_inf: Tensor | None = None
    sumsq: Tensor | None = None


def _stats_of(b):
    """The bucket's stats pass: over its native plan's bound grads, or a list op."""
    if b.native_plan is not None:
        return b.native_plan.grad_stats_ if b.binds is None else partial(b.native_plan.grad_stats_, binds=b.binds)
    return partial((_ops.ops_for(b.device) if b.native else _ops.reference).grad_stats_, b.grads)


def device_amp(
    opt, work, groups, grad_scale: Tensor | None, found_inf: Tensor | None, *, need_stats: bool, find_infs: bool
) -> tuple[dict[torch.device, DeviceAmp], dict[torch.device, Tensor] | None]:
    """Each bucket device's control tensors for the update, after the stats
    pass when one is needed; and, with ``find_infs``, the per-device found_inf
    tensors the pass computed (None otherwise). ``work``: (group, buckets) pairs;
    ``groups``: the reduction groups this rank joins."""
    devices = []
    for _, buckets in work:
        for b in buckets.values():
            if b.device not in devices:
                devices.append(b.device)

    amp = {d: DeviceAmp() for d in devices}
    for d in devices:
        amp[d].grad_scale = _on(grad_scale, d)
        amp[d].found_inf = _on(found_inf, d)

    computed = None
    if need_stats or groups:
        home = devices[0] if devices else _collectives.device_of(groups[0])
        # a tied weight listed twice counts once in the global norm
        parts = [(b.device, b.reduce, _stats_of(b)) for _, buckets in work for b in buckets.values() if not b.repeat]
        found, sumsq = _collectives.global_stats(
            parts, groups, grad_scale, found_inf, home, need_stats, max_value=opt.max_grad_value or 0.0
        )
        if need_stats:
            # the dict, not the property: dynamo (torch < 2.13) cannot trace a
            # property setter on an optimizer
            opt._step_io["last_grad_norm"] = sumsq.sqrt().reshape(())
        for d in devices:
            if opt.max_grad_norm is not None:
                amp[d].sumsq = _on(sumsq, d)
            if find_infs or found_inf is not None:
                amp[d].found_inf = _on(found, d)
        if find_infs:
            computed = {d: _on(found, d) for d in devices or [home]}
    return amp, computed
