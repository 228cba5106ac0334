"""fusedopt.GradScaler: a drop-in for torch.amp.GradScaler.

It is torch's GradScaler (same constructor, methods, scale schedule and
state_dict, which therefore interchange with torch's both ways) with two changes:

* ``unscale_`` runs one fused multi-tensor pass per device that covers every
  float dtype, bf16 included (torch's CUDA unscale kernel rejects bf16 grads);
* ``step`` with a fusedopt optimizer does not pre-scan the grads for infs: the
  optimizer's own stats pass finds them (together with the global norm when it
  clips) and the update skips itself on the device, so the whole AMP step is two
  passes over the grads and never syncs with the host.

With any other optimizer, ``step`` is torch's.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.amp.grad_scaler import OptState

from . import _collectives, _dtensor, _ops
from ._repeats import rounds
from ._versions import bump
from .optim import _idiom
from .optim._base import FusedOptimizer, native_eligible


class GradScaler(torch.amp.GradScaler):
    __doc__ = (__doc__ or "") + "\n\n" + (torch.amp.GradScaler.__doc__ or "")

    def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16):
        """grads *= inv_scale and per-device found_inf, as torch's method, in one
        fused launch per device (native ops where they serve the grads). DTensor
        grads are unscaled as their local shards, and found_inf is then maxed over
        the ranks that hold their other shards, as torch's DTensor handler of the
        unscale op does, so every rank skips and backs off alike.
        With a fusedopt optimizer whose plans serve the step, the unscale runs
        through them and leaves them holding the grads for the clip and the
        step (optim/_idiom.py)."""
        if isinstance(optimizer, FusedOptimizer):
            found = _idiom.unscale_(optimizer, inv_scale, found_inf, allow_fp16)
            if found is not None:
                return found
        per_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
        shared_with: dict[torch.device, list] = defaultdict(list)
        sharded: list[torch.Tensor] = []
        with torch.no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    if (not allow_fp16) and param.grad.dtype == torch.float16:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    if param.grad.is_sparse:
                        # as torch: coalesce fp16 (duplicate indices could overflow), unscale the values
                        if param.grad.dtype is torch.float16:
                            param.grad = param.grad.coalesce()
                        to_unscale = param.grad._values()
                    else:
                        to_unscale = param.grad
                    if _dtensor.is_dtensor(to_unscale):
                        shared_with[to_unscale.device].append(_collectives.of_dtensor(to_unscale, partial_ok=True))
                        sharded.append(to_unscale)  # its version counter is not its shard's
                        to_unscale = to_unscale._local_tensor
                    per_device[to_unscale.device].append(to_unscale)

            found_per_device: dict[torch.device, torch.Tensor] = {}
            for device, grads in per_device.items():
                found = found_inf.to(device=device, non_blocking=True, copy=True)
                inv = inv_scale.to(device=device, non_blocking=True)
                serve = _ops.backend(device) != "reference"
                native, rest = [], []
                for g in grads:
                    (native if serve and native_eligible(g, g, ()) else rest).append(g)
                # a grad listed twice is unscaled twice, in order, as torch's kernel does
                for part in rounds(native):
                    _ops.ops_for(device).unscale_(part, found, inv)
                if rest:
                    _ops.reference.unscale_(rest, found, inv)
                bump(native)
                _collectives.max_found_(found, _collectives.ordered_groups(shared_with[device]))
                found_per_device[device] = found
            bump(sharded)
        return found_per_device

    def update(self, new_scale=None):
        # grads an unscale_ left bound to a fusedopt optimizer's plans, where no
        # step consumed them (a step skipped by the caller): let go of them
        if not torch.compiler.is_compiling():
            for opt in list(_idiom._HOLDING):
                if id(opt) in self._per_optimizer_states:
                    _idiom.release(opt)
        return super().update(new_scale)

    def step(self, optimizer, *args, **kwargs):
        if not (self._enabled and _fused_amp_step(optimizer)) or args or kwargs:
            return super().step(optimizer, *args, **kwargs)
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            # the optimizer unscales, finds infs and skips, all on the device
            found = optimizer._amp_step(grad_scale=self._get_scale_async(), found_inf=None)
            if not found:
                raise AssertionError("No inf checks were recorded for this optimizer.")
            state["found_inf_per_device"] = found
        else:
            # unscale_ already ran: grads are unscaled, found_inf is known
            scale = self._get_scale_async()
            found_inf = sum(t.to(scale.device, non_blocking=True) for t in state["found_inf_per_device"].values())
            optimizer._amp_step(grad_scale=None, found_inf=found_inf)
        state["stage"] = OptState.STEPPED
        return None


def _fused_amp_step(optimizer) -> bool:
    """Whether the optimizer's own step takes the scale (not a differentiable
    step, which runs torch's implementation and is driven as torch's)."""
    return isinstance(optimizer, FusedOptimizer) and not optimizer.defaults.get("differentiable")
