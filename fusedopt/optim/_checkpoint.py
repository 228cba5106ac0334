"""Checkpoints and copies of fusedopt's optimizers: torch's state_dict format
exactly, plus fusedopt's own options, which live as optimizer attributes (never
as param_group keys, so that state_dicts stay torch's)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _quant8_states, _stochastic_rounding

# fusedopt's own options, kept through pickling and copying
_FUSEDOPT_ATTRS = (
    "max_grad_norm", "master_weights", "state_dtype", "norm_group", "max_grad_value", "min_8bit_size",
    "stochastic_rounding", "seed",
)
_FUSEDOPT_DEFAULTS = (None, False, None, None, None, 4096, False, None)


class CheckpointMixin:
    """The checkpoint half of FusedOptimizer (mixed in before torch's Optimizer)."""

    # -- pickling / copying keeps fusedopt's own options ----------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in _FUSEDOPT_ATTRS:
            state[name] = getattr(self, name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also called by torch's load_state_dict with only state and param_groups:
        # the options this optimizer already has must survive that.
        for name, default in zip(_FUSEDOPT_ATTRS, _FUSEDOPT_DEFAULTS):
            if name not in state and name not in self.__dict__:
                state[name] = default
        super().__setstate__(state)
        self.__dict__.setdefault("_step_io", {"last_grad_norm": None})
        if "_bucket_cache" not in self.__dict__:
            from ._bucket_cache import BucketCache

            self._bucket_cache = BucketCache()

    # -- state_dict loading --------------------------------------------------------------

    def _normalize_loaded_state(self) -> None:
        """After load_state_dict: steps as float32 0-dim tensors on the param's
        device (torch keeps them on the CPU, in float64 under a float64 default)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device).reshape(())

    def _params_by_saved_id(self, state_dict: dict) -> dict[Any, Tensor]:
        saved = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        mine = [p for g in self.param_groups for p in g["params"]]
        return dict(zip(saved, mine))

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load_state_dict, hooks and all, except that the floating state
        tensors keep the dtype this optimizer keeps them in: torch's loader casts
        them to their param's dtype, which would round fp32 masters and fp32
        moments of bf16 params. They bypass that cast between the user's
        pre-hooks (which see and may change everything) and post-hooks (which see
        the finished state)."""
        kept: dict[Tensor, dict[str, Tensor]] = {}

        def set_aside(optimizer, sd):
            by_id = self._params_by_saved_id(sd)
            passed = {}
            for pid, st in sd["state"].items():
                p = by_id.get(pid)
                if isinstance(st, dict) and p is not None:
                    # (8-bit codes too: torch would cast them to the param's dtype)
                    ours = {
                        k: v for k, v in st.items()
                        if k != "step" and isinstance(v, Tensor)
                        and (v.is_floating_point() or v.dtype is torch.uint8 or k == _stochastic_rounding.KEY)
                    }
                    kept[p] = ours
                    st = {k: v for k, v in st.items() if k not in ours}
                passed[pid] = st
            return {**sd, "state": passed}

        def restore(optimizer):
            for p, tensors in kept.items():
                for key, value in tensors.items():
                    if key == _stochastic_rounding.KEY:
                        # the generator state: int64, where the param's step lives
                        device = "cpu" if p.device.type == "meta" else p.device
                        self.state[p][key] = value.to(device=device, dtype=torch.int64)
                        continue
                    if key == "master_param":
                        if not self._has_master(p):
                            continue  # this optimizer keeps no master for p
                        dtype = torch.float32
                    elif value.dtype is torch.uint8 or key.endswith(_quant8_states.ABSMAX):
                        dtype = value.dtype  # 8-bit codes and their float32 scales
                    elif p.is_floating_point():
                        dtype = self._state_dtype_for(p)
                    else:
                        dtype = value.dtype
                    self.state[p][key] = value.to(device=p.device, dtype=dtype)
            self._normalize_loaded_state()
            # fp32 states of 8-bit params are quantized, and the reverse
            for p, st in self.state.items():
                if isinstance(st, dict):
                    _quant8_states.convert_loaded(self, p, st)
            self._after_load()

        self._forget_buckets()
        pre = self.register_load_state_dict_pre_hook(set_aside)
        post = self.register_load_state_dict_post_hook(restore, prepend=True)
        try:
            super().load_state_dict(state_dict)
        finally:
            pre.remove()
            post.remove()

    def _after_load(self) -> None:
        """Subclass hook: reset what a loaded state invalidates."""

