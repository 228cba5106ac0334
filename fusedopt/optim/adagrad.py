"""fusedopt.Adagrad: a drop-in for torch.optim.Adagrad."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from torch.optim.adagrad import adagrad as torch_adagrad

from .._reference_adagrad import adagrad_
from . import _torch_impl, _validate
from ._base import Bucket, DeviceAmp, FusedOptimizer, Route
from ._rule import Rule


def _torch_refuses_fused_cuda() -> bool:
    try:
        return "cuda_unsupported=True" in inspect.getsource(torch.optim.Adagrad._init_group)
    except (OSError, TypeError):  # no source shipped: torch's current behaviour
        return False


class Adagrad(FusedOptimizer):
    """Adagrad on fused kernels.

    Takes every argument of ``torch.optim.Adagrad`` with the same defaults and
    checks (``foreach``, ``fused`` and ``differentiable`` as for
    :class:`fusedopt.Adam`), plus fusedopt's ``max_grad_norm``,
    ``max_grad_value``, ``master_weights``, ``state_dtype`` and ``norm_group``.
    Its state is torch's (``step``, ``sum``, made when the optimizer is, as
    torch makes it). Sparse gradients (an ``nn.Embedding(sparse=True)``) step
    through torch's own Adagrad, as torch.optim.Adagrad steps them.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
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
        # torch.optim.Adagrad's checks, with its messages
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if state_dtype is torch.float16:
            raise ValueError(
                "state_dtype=torch.float16 is refused for Adagrad: its sum of squared gradients overflows "
                "float16 (a gradient above 256 squares past 65504). Use torch.bfloat16 to halve the state's traffic."
            )
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        # fusedopt's own options, in FusedOptimizer's order
        super().__init__(
            params, defaults, max_grad_norm, master_weights, state_dtype, norm_group, max_grad_value,
            min_8bit_size=min_8bit_size, stochastic_rounding=stochastic_rounding, seed=seed,
        )
        # torch makes every param's state with the optimizer
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p], group)

    # torch's Adagrad before 2.15 had no fused CUDA kernel and says so when it
    # refuses a param for fused=True; fusedopt's message is that torch's
    _fused_cuda_unsupported = _torch_refuses_fused_cuda()

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)

    def _initial_state(self, p: Tensor, name: str, group: dict) -> Tensor:
        # torch fills every group's sums from the optimizer's value (the
        # constructor's argument), whatever a group says
        value = self.defaults["initial_accumulator_value"]
        if p.is_complex():
            value = complex(value, value)
        return torch.full_like(p, value, dtype=self._state_dtype_for(p), memory_format=torch.preserve_format)

    def _bucket_signature(self, group: dict) -> tuple:
        # sparse grads refuse weight decay when routed: a decay switched on
        # later must route them again, as torch refuses it on every step
        return super()._bucket_signature(group) + (group["weight_decay"] != 0,)

    def _check_group(self, group: dict, index: int) -> None:
        _validate.check_reals(group, index, ("lr", "lr_decay", "weight_decay", "eps"), tensor_ok=("lr",))

    def _special_route(self, p: Tensor, g: Tensor, group: dict):
        if not g.is_sparse:
            return None
        # Sparse grads (an nn.Embedding(sparse=True)): torch's own single-tensor
        # Adagrad, as torch.optim.Adagrad runs them; refused here, before any
        # bucket is updated, where torch's would raise in the middle of its step
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        if group["differentiable"] or p.is_complex():
            raise RuntimeError("fusedopt.Adagrad takes sparse gradients of real params, without differentiable=True")
        return Route((p.device, "sparse"), "sparse", {}, [])

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        if bucket.kind != "sparse":
            super()._apply_bucket(ops, bucket, group, amp, device)
            return
        grads = _torch_impl.amp_grads(self, bucket.grads, amp)
        if grads is None:
            return
        for p in bucket.params:
            if not self.state[p]:
                self._init_state(p, self.state[p], group)
        states = [self.state[p] for p in bucket.params]
        torch_adagrad(
            bucket.params, grads, [st["sum"] for st in states], [st["step"] for st in states],
            lr=group["lr"], weight_decay=group["weight_decay"], lr_decay=group["lr_decay"], eps=group["eps"], has_sparse_grad=True,
            foreach=False, maximize=group["maximize"], differentiable=False, fused=None, has_complex=False,
        )

    def _torch_group_step(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if not self.state[p]:
                self._init_state(p, self.state[p], group)
        torch_adagrad(
            params,
            [p.grad for p in params],
            [self.state[p]["sum"] for p in params],
            [self.state[p]["step"] for p in params],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            has_sparse_grad=False,
            foreach=group["foreach"],
            maximize=group["maximize"],
            differentiable=group["differentiable"],
            fused=group["fused"],
            has_complex=any(torch.is_complex(p) for p in params),
        )


Adagrad.rule = Rule(
    name="adagrad",
    states=("sum",),
    signed=(False,),
    counter="step",
    active=lambda group: 1,
    hyper=lambda group: (group["lr_decay"], group["weight_decay"], group["eps"]),
    reference=adagrad_,
)
