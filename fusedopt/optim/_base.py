"""What Adam, AdamW and SGD share: the step's skeleton, the AMP protocol, the
global-norm pass, bucketing tensors for the kernels, and checkpoint handling.

A step is at most two passes over the gradients:

1. ``grad_stats_`` (only when clipping, or when fusedopt's GradScaler asks the
   optimizer to find infs itself): one read of every grad, giving found_inf and
   the global sum of squares of the unscaled grads, per device;
2. the update, which applies ``1/scale`` and the clip coefficient to each grad
   element as it reads it, and skips everything on the device when found_inf
   is set.

Nothing in it reads a device value on the host.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import _ops

NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)
_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)

# fusedopt's own options; kept as optimizer attributes, never as param_group
# keys, so that state_dicts stay exactly torch's.
_FUSEDOPT_ATTRS = ("max_grad_norm", "master_weights", "state_dtype")


@dataclass
class Bucket:
    """Tensors one kernel call updates: one device, one dtype per list."""

    native: bool
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    lists: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class DeviceAmp:
    """The step's control tensors as seen by one device (all on that device)."""

    grad_scale: Tensor | None = None
    found_inf: Tensor | None = None
    sumsq: Tensor | None = None


def check_fusedopt_options(max_grad_norm, master_weights, state_dtype) -> None:
    if max_grad_norm is not None:
        if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float)):
            raise TypeError(f"max_grad_norm must be a number or None, got {type(max_grad_norm).__name__}")
        if not (max_grad_norm > 0 and max_grad_norm != float("inf")):
            raise ValueError(f"Invalid max_grad_norm: {max_grad_norm} (must be finite and > 0)")
    if not isinstance(master_weights, bool):
        raise TypeError(f"master_weights must be a bool, got {type(master_weights).__name__}")
    if state_dtype not in _STATE_DTYPES:
        raise ValueError(f"Invalid state_dtype: {state_dtype} (use None, torch.float32, torch.bfloat16 or torch.float16)")


def reject_unsupported_flags(name: str, differentiable: bool) -> None:
    if differentiable:
        raise ValueError(
            f"fusedopt.{name} does not support differentiable=True: its kernels update tensors in "
            f"place outside autograd. Use torch.optim.{name} for differentiable optimization."
        )


def native_eligible(p: Tensor, g: Tensor, states: tuple[Tensor, ...]) -> bool:
    """Whether the native kernels can take this param (else: the reference path)."""
    if type(p) not in _PLAIN_TENSOR_TYPES or type(g) is not Tensor:
        return False  # tensor subclasses (e.g. DTensor) dispatch their own ops
    if p.dtype not in NATIVE_DTYPES or (g.dtype is not p.dtype and g.dtype is not torch.float32):
        return False
    if not (p.is_contiguous() and g.is_contiguous()):
        return False
    first = states[0].dtype if states else None
    for s in states:
        if s.dtype is not first or not s.is_contiguous() or type(s) is not Tensor:
            return False
    return first is None or first in NATIVE_DTYPES


class FusedOptimizer(Optimizer):
    """Base of fusedopt's optimizers. Subclasses define the state and the op call."""

    # torch.amp.GradScaler hands us the scale and found_inf instead of unscaling.
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults, *, max_grad_norm, master_weights, state_dtype):
        check_fusedopt_options(max_grad_norm, master_weights, state_dtype)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.master_weights = master_weights
        self.state_dtype = state_dtype
        # Pre-clip global norm of the unscaled grads of the last step that
        # computed it (a device tensor; inf/nan after an overflow).
        self.last_grad_norm: Tensor | None = None
        super().__init__(params, defaults)

    # -- pickling / copying keeps fusedopt's own options ----------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in _FUSEDOPT_ATTRS:
            state[name] = getattr(self, name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("max_grad_norm", None)
        state.setdefault("master_weights", False)
        state.setdefault("state_dtype", None)
        super().__setstate__(state)
        self.__dict__.setdefault("last_grad_norm", None)

    # -- what subclasses provide ----------------------------------------------------

    def _bucket_group(self, group: dict) -> dict[tuple, Bucket]:
        raise NotImplementedError

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------

    def _state_dtype_for(self, p: Tensor) -> torch.dtype:
        if p.is_complex() or not p.is_floating_point():
            return p.dtype
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if self._has_master(p) else p.dtype

    def _has_master(self, p: Tensor) -> bool:
        return self.master_weights and p.dtype in (torch.float16, torch.bfloat16)

    def _master_for(self, p: Tensor, state: dict) -> Tensor | None:
        if not self._has_master(p):
            return None
        master = state.get("master_param")
        if master is None:
            master = state["master_param"] = p.detach().float().contiguous()
        return master

    @staticmethod
    def _lr_args(lr, device: torch.device) -> tuple[float, Tensor | None]:
        if isinstance(lr, Tensor):
            return 0.0, lr.detach().to(device, non_blocking=True)
        return float(lr), None

    @staticmethod
    def _check_grad_device(p: Tensor, g: Tensor) -> None:
        if g.device != p.device:
            raise RuntimeError(
                f"fusedopt: a parameter on {p.device} has its grad on {g.device}; "
                "grads must live on their parameter's device"
            )

    # -- the step --------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._fused_step(getattr(self, "grad_scale", None), getattr(self, "found_inf", None))
        return loss

    def _fused_step(
        self,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
        *,
        find_infs: bool = False,
    ) -> dict[torch.device, Tensor] | None:
        """Runs the step. With ``find_infs`` (fusedopt's GradScaler), the optimizer
        finds inf/nan grads itself in its stats pass and returns the per-device
        found_inf tensors it computed; a step with infs then updates nothing."""
        work = [(group, self._bucket_group(group)) for group in self.param_groups]
        if not any(buckets for _, buckets in work):
            return {} if find_infs else None

        devices = []
        for _, buckets in work:
            for key in buckets:
                if key[0] not in devices:
                    devices.append(key[0])

        amp = {d: DeviceAmp() for d in devices}
        for d in devices:
            amp[d].grad_scale = _on(grad_scale, d)
            amp[d].found_inf = _on(found_inf, d)

        computed = None
        if self.max_grad_norm is not None or find_infs:
            computed, sumsq = self._grad_stats(work, devices, grad_scale)
            self.last_grad_norm = sumsq[devices[0]].sqrt()
            if self.max_grad_norm is not None:
                for d in devices:
                    amp[d].sumsq = sumsq[d]
            if find_infs:
                for d in devices:
                    amp[d].found_inf = computed[d]

        for group, buckets in work:
            for key, bucket in buckets.items():
                device = key[0]
                ops = _ops.ops_for(device) if bucket.native else _ops.reference
                self._apply_bucket(ops, bucket, group, amp[device], device)
        return computed

    def _grad_stats(self, work, devices, grad_scale):
        """Pass 1: per-device found_inf and the global sum of squares of the
        unscaled grads, everything left on the devices."""
        found = {}
        partial = {}
        for d in devices:
            buf = torch.zeros(2, dtype=torch.float32, device=d)
            found[d], partial[d] = buf[0:1], buf[1:2]
        for _, buckets in work:
            for key, bucket in buckets.items():
                d = key[0]
                ops = _ops.ops_for(d) if bucket.native else _ops.reference
                ops.grad_stats_(bucket.grads, _on(grad_scale, d), found[d], partial[d], _ops.workspace_for(d))
        if len(devices) == 1:
            return found, partial
        # Several devices: every device sees the total, and any device's inf.
        first = devices[0]
        total = sum(partial[d].to(first, non_blocking=True) for d in devices)
        any_inf = sum(found[d].to(first, non_blocking=True) for d in devices)
        return (
            {d: _on(any_inf, d) for d in devices},
            {d: _on(total, d) for d in devices},
        )

    # -- checkpoints -------------------------------------------------------------------

    def _normalize_loaded_state(self) -> None:
        """After load_state_dict: steps as float32 on the param's device, states
        in the configured dtype (torch's loader casts them to the param's)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                for key, value in list(state.items()):
                    if key == "step":
                        state[key] = torch.as_tensor(value, dtype=torch.float32).to(p.device).reshape(())
                    elif key == "master_param":
                        continue
                    elif isinstance(value, Tensor) and value.is_floating_point() and p.is_floating_point():
                        state[key] = value.to(dtype=self._state_dtype_for(p), device=p.device).contiguous()

    def _params_by_saved_id(self, state_dict: dict) -> dict[Any, Tensor]:
        saved = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        mine = [p for g in self.param_groups for p in g["params"]]
        return dict(zip(saved, mine))

    def load_state_dict(self, state_dict: dict) -> None:
        # torch's loader casts every floating state tensor to its param's dtype;
        # fp32 master weights must not go through that, so they are set aside.
        by_id = self._params_by_saved_id(state_dict)
        masters = {}
        stripped = {}
        for pid, st in state_dict["state"].items():
            if isinstance(st, dict) and "master_param" in st:
                masters[pid] = st["master_param"]
                st = {k: v for k, v in st.items() if k != "master_param"}
            stripped[pid] = st
        super().load_state_dict({**state_dict, "state": stripped})
        for pid, master in masters.items():
            p = by_id.get(pid)
            if p is not None and self._has_master(p):
                self.state[p]["master_param"] = master.to(device=p.device, dtype=torch.float32).contiguous()
        self._normalize_loaded_state()


def _on(t: Tensor | None, device: torch.device) -> Tensor | None:
    if t is None or t.device == device:
        return t
    return t.to(device, non_blocking=True)
