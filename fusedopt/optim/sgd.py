"""fusedopt.SGD: a drop-in for torch.optim.SGD."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reference_sgd, reference
from . import _quant8_states, _torch_impl, _validate
from ._base import Bucket, DeviceAmp, FusedOptimizer, Route
from ._rule import Rule


class SGD(FusedOptimizer):
    """SGD with momentum, dampening, nesterov and L2 weight decay on fused kernels.

    Takes every argument of ``torch.optim.SGD`` with the same defaults and
    checks, plus fusedopt's ``max_grad_norm``, ``max_grad_value``,
    ``master_weights``, ``state_dtype`` and ``norm_group`` (see
    :class:`fusedopt.Adam`). Sparse gradients, and grads whose dtype differs
    from their param's (which torch's SGD takes by type promotion), are handled
    as torch handles them: by torch's own single-tensor SGD. float32 grads of
    float16/bfloat16 params run on the kernels, with the momentum buffer in
    ``state_dtype`` (torch's would take the grad's dtype).

    A momentum buffer starts as a copy of the first gradient that is actually
    applied, as in torch; with AMP that may be a later step than the first, so
    fusedopt tracks "not yet applied" on the device, outside the state_dict.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | str | None = None,
        norm_group=None,
        max_grad_value: float | None = None,
        min_8bit_size: int = 4096,
        stochastic_rounding: bool = False,
        seed: int | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        # param -> one-element bool tensor on its device: "buffer not yet applied"
        self._momentum_first: dict[Tensor, Tensor] = {}
        # fusedopt's own options, in FusedOptimizer's order
        super().__init__(
            params, defaults, max_grad_norm, master_weights, state_dtype, norm_group, max_grad_value,
            min_8bit_size=min_8bit_size, stochastic_rounding=stochastic_rounding, seed=seed,
        )

    def __getstate__(self):
        state = super().__getstate__()
        state["_momentum_first"] = self._momentum_first  # not-yet-applied buffers stay so in a copy
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_momentum_first", {})
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    def _momentum_buffer(self, p: Tensor, state: dict) -> tuple[Tensor, Tensor]:
        buf = state.get("momentum_buffer")
        first = self._momentum_first.get(p)
        if buf is None or first is None:
            # no buffer (new param, or state reset): start one, applied on the
            # first step that is not skipped; a loaded buffer has been applied
            fresh = buf is None
            if fresh:
                sd = self._state_dtype_for(p)
                self._store_state(
                    p, state, "momentum_buffer", torch.zeros_like(p, dtype=sd, memory_format=torch.preserve_format)
                )
                buf = state["momentum_buffer"]
            # torch.full fills on the device; torch.tensor would copy from the host (a sync on CUDA)
            first = self._momentum_first[p] = torch.full((), fresh, dtype=torch.bool, device=p.device)
        return buf, first

    def _applied_momentum_buffer(self, p: Tensor) -> Tensor | None:
        """p's buffer as torch's SGD sees it: None if none, or if fusedopt made it
        and no step has applied it yet (reading that flag syncs, once)."""
        first = self._momentum_first.pop(p, None)
        if first is not None and bool(first):
            return None
        state = self.state.get(p)
        return state.get("momentum_buffer") if state else None

    def _state_changed(self) -> None:
        # the flags of params whose state is gone (popped, cleared, a new
        # opt.state) would keep those params alive
        if self._momentum_first:
            state = self.state
            self._momentum_first = {p: f for p, f in self._momentum_first.items() if p in state}

    def _check_group(self, group: dict, index: int) -> None:
        _validate.check_sgd_group(group, index)

    def _torch_group_step(self, group: dict) -> None:
        _torch_impl.sgd_group(self, group)

    def _special_route(self, p: Tensor, g: Tensor, group: dict) -> Route | None:
        _validate.check_fused_device(p, group)
        if group["momentum"] != 0 and self._is_8bit(p) and (g.is_sparse or g.dtype is not p.dtype):
            # those go to torch's own SGD, which knows no 8-bit buffer
            raise RuntimeError(
                "fusedopt.SGD: state_dtype='8bit' takes dense grads of the parameter's dtype only; got a "
                f"{'sparse' if g.is_sparse else str(g.dtype)} grad for a {p.dtype} parameter"
            )
        if g.is_sparse:
            return Route((p.device, "sparse"), "sparse", {}, [])
        if group["momentum"] != 0:
            _validate.check_dense_momentum(self.state.get(p))
        if g.dtype is not p.dtype and not _validate.grad_dtype_is_extension(p, g):
            _validate.check_state(p, g, self.state.get(p) or {}, [])
            return Route((p.device, "torch"), "torch", {}, [])
        return None

    def _rule_tensors(self, p: Tensor, group: dict, occurrence: int):
        has_momentum = group["momentum"] != 0
        # torch keeps no state at all for momentum-free SGD; neither do we
        state = self.state[p] if has_momentum or self._has_master(p) else None
        if not has_momentum:
            return state, [], None
        buf, first = self._momentum_buffer(p, state)
        if occurrence:
            # A param listed twice: torch starts the buffer from the grad at
            # each occurrence of the step that creates it (the buffer list
            # is read before any update). A flag of its own, equal to the
            # first occurrence's now and cleared by the same applied steps,
            # gives the later occurrences that.
            first = first.clone()
        return state, _quant8_states.tensors_of(state, ["momentum_buffer"]), first

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        if bucket.kind in ("sparse", "torch"):
            self._torch_step(bucket, group, amp)
            return
        super()._apply_bucket(ops, bucket, group, amp, device)

    def _torch_step(self, bucket: Bucket, group: dict, amp: DeviceAmp) -> None:
        """Sparse grads, and grads of another dtype than their param's: torch's own
        single-tensor SGD on the grads as the kernels would see them (see
        _torch_impl.amp_grads)."""
        grads = _torch_impl.amp_grads(self, bucket.grads, amp)
        if grads is not None:
            _torch_impl.sgd_on(self, group, bucket.params, grads, has_sparse_grad=True, foreach=False)

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self):
        """torch's state_dict, less the momentum buffers no step has applied yet
        (torch has none for such params), removed before the user's post-hooks
        run. Reading those flags syncs, once."""

        def drop_unapplied(optimizer, sd):
            flags = list(self._momentum_first.items())
            values = torch.stack([f.cpu() for _, f in flags]).tolist() if flags else []
            pending = {p for (p, _), first in zip(flags, values) if first}
            if not pending:
                return sd
            index = 0
            for group in self.param_groups:
                for p in group["params"]:
                    if p in pending and index in sd["state"]:
                        unapplied = ("momentum_buffer", "momentum_buffer_absmax")  # (8-bit: its scales too)
                        st = {k: v for k, v in sd["state"][index].items() if k not in unapplied}
                        if st:
                            sd["state"][index] = st
                        else:
                            del sd["state"][index]
                    index += 1
            return sd

        hook = self.register_state_dict_post_hook(drop_unapplied, prepend=True)
        try:
            return super().state_dict()
        finally:
            hook.remove()

    def _after_load(self) -> None:
        # loaded buffers have been applied; missing ones start fresh
        self._momentum_first = {}


def _sgd_hyper(group: dict) -> tuple:
    """sgd_'s packed hyperparameters: momentum, dampening, weight_decay, nesterov."""
    return (float(group["momentum"]), float(group["dampening"]), float(group["weight_decay"]),
            bool(group["nesterov"]))


def _sgd_reference(params, grads, states, counters, masters, hyper, hyper_tensor, lr, lr_tensor, grad_scale,
                   found_inf, sumsq, max_norm, max_value=0.0, maximize=False):
    """reference.sgd_ with the list op's signature (fusedopt/optim/_rule.py)."""
    momentum, dampening, weight_decay, nesterov = hyper
    _reference_sgd.sgd_(params, grads, states, counters, masters, lr, lr_tensor, momentum, dampening, weight_decay,
                   bool(nesterov), maximize, grad_scale, found_inf, sumsq, max_norm, max_value)


SGD.rule = Rule(
    name="sgd",
    states=("momentum_buffer",),
    signed=(True,),
    counter=None,  # its first-step flags live beside the state (see _momentum_first)
    active=lambda group: 1 if group["momentum"] != 0 else 0,
    hyper=_sgd_hyper,
    reference=_sgd_reference,
)
