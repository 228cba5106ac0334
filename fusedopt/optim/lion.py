"""fusedopt.Lion: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms") with the arguments and semantics of the lion-pytorch package."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ops
from .._reference_lion import lion_
from . import _compile, _validate
from ._base import Bucket, DeviceAmp, FusedOptimizer, Route
from ._rule import Rule


class Lion(FusedOptimizer):
    """Lion on fused kernels: a drop-in for ``lion_pytorch.Lion``.

    ``lr``, ``betas=(0.9, 0.99)`` and ``weight_decay`` (decoupled: ``p *= 1 -
    lr * weight_decay``) as in lion-pytorch, including its
    ``decoupled_weight_decay`` (the decay divided by the initial lr) and
    ``use_triton`` (accepted; fusedopt always runs its own kernels). The state
    (``exp_avg``) and param groups are lion-pytorch's, so a state_dict loads
    there and back. Plus fusedopt's ``max_grad_norm``, ``max_grad_value``,
    ``master_weights``, ``state_dtype`` and ``norm_group`` (see
    :class:`fusedopt.Adam`).
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        use_triton: bool = False,
        decoupled_weight_decay: bool = False,
        *,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | str | None = None,
        norm_group=None,
        max_grad_value: float | None = None,
        min_8bit_size: int = 4096,
        stochastic_rounding: bool = False,
        seed: int | None = None,
    ) -> None:
        # lion-pytorch's checks (assertions there), with messages
        if not lr > 0.0:
            raise AssertionError(f"Lion: lr must be positive, got {lr}")
        if not all(0.0 <= beta <= 1.0 for beta in betas):
            raise AssertionError(f"Lion: betas must lie in [0, 1], got {tuple(betas)}")
        self._init_lr = float(lr)
        self.decoupled_wd = bool(decoupled_weight_decay)
        self.use_triton = bool(use_triton)
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay}
        # fusedopt's own options, in FusedOptimizer's order
        super().__init__(
            params, defaults, max_grad_norm, master_weights, state_dtype, norm_group, max_grad_value,
            min_8bit_size=min_8bit_size, stochastic_rounding=stochastic_rounding, seed=seed,
        )

    def __getstate__(self):
        state = super().__getstate__()
        for name in ("_init_lr", "decoupled_wd", "use_triton"):
            state[name] = getattr(self, name)
        return state

    def __setstate__(self, state):
        # (load_state_dict passes only state and param_groups: keep what this optimizer has)
        for name, default in (("_init_lr", None), ("decoupled_wd", False), ("use_triton", False)):
            if name not in state and name not in self.__dict__:
                state[name] = default
        super().__setstate__(state)

    def _hyper(self, group: dict, native: bool) -> tuple:
        # Lion.rule.hyper packs the group; decoupled_weight_decay is this
        # instance's, not the group's: lion-pytorch divides the decay by the
        # initial lr
        hyper = super()._hyper(group, native)
        if not self.decoupled_wd:
            return hyper
        beta1, beta2, weight_decay = hyper
        return (beta1, beta2, weight_decay / self._init_lr)

    def _check_group(self, group: dict, index: int) -> None:
        _validate.check_reals(group, index, ("lr", "weight_decay"), tensor_ok=("lr",))
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"param_groups[{index}]['betas'] must hold 2 values, got {len(betas)}")
        for i, beta in enumerate(betas):
            _validate._check_real(group, index, f"betas[{i}]", beta, tensor_ok=False)

    def _special_route(self, p: Tensor, g: Tensor, group: dict):
        # Sparse grads (an nn.Embedding(sparse=True)): lion-pytorch adds them to
        # its dense moment, so every element moves; here, as dense grads through
        # the plain-torch update, one param at a time (they are few)
        return Route((p.device, "sparse"), "sparse", {}, []) if g.is_sparse else None

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        if bucket.kind != "sparse":
            super()._apply_bucket(ops, bucket, group, amp, device)
            return
        lr, lr_tensor = _compile.lr_args(group["lr"], device, _ops.reference)
        hyper = self._hyper(group, native=False)
        for p, g in zip(bucket.params, bucket.grads):
            state, moments, _ = self._rule_tensors(p, group, 0)
            master = self._master_for(p, state)
            # (the rule's reference: it takes 8-bit states too)
            update = self.rule.op(_ops.reference)
            update([p], [g.to_dense()], moments, [], [] if master is None else [master], hyper, None, lr, lr_tensor,
                   amp.grad_scale, amp.found_inf, amp.sumsq, self.max_grad_norm or 0.0, self.max_grad_value or 0.0)


Lion.rule = Rule(
    name="lion",
    states=("exp_avg",),
    signed=(True,),
    counter=None,
    active=lambda group: 1,
    hyper=lambda group: (group["betas"][0], group["betas"][1], group["weight_decay"]),  # Lion._hyper scales the decay
    reference=lion_,
)
