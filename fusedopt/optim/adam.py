"""fusedopt.Adam and fusedopt.AdamW: drop-ins for torch.optim's classes."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from .. import _native_plan, _ops
from . import _torch_impl, _validate
from ._base import Bucket, DeviceAmp, FusedOptimizer, Route, layout_of, native_eligible


def _to_scalar(x):
    """A one-element tensor hyperparameter as a 0-dim tensor (torch does the same)."""
    return x.squeeze() if isinstance(x, Tensor) and x.dim() != 0 else x


def _check_adam_args(lr, betas, eps, weight_decay, foreach, capturable) -> None:
    """torch.optim.Adam's constructor checks, with torch's messages."""
    if isinstance(lr, Tensor):
        if foreach and not capturable:
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if not (
        (isinstance(betas[0], float) and isinstance(betas[1], float))
        or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))
    ):
        raise ValueError("betas must be either both floats or both Tensors")
    for i, beta in enumerate(betas):
        if isinstance(beta, Tensor):
            if not capturable and foreach:
                raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
            if beta.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")


def _betas_stay_on_device(beta1, beta2) -> bool:
    """Tensor betas that must not be read on the host: any under torch.compile,
    and those on a device other than the CPU (a read would be a sync)."""
    tensors = [b for b in (beta1, beta2) if isinstance(b, Tensor)]
    if not tensors:
        return False
    return torch.compiler.is_compiling() or any(b.device.type != "cpu" for b in tensors)


class Adam(FusedOptimizer):
    """Adam (and, with ``decoupled_weight_decay=True``, AdamW) on fused kernels.

    Takes every argument of ``torch.optim.Adam`` with the same defaults and
    checks; ``foreach``, ``fused`` and ``capturable`` are accepted and kept in
    the param groups for checkpoint compatibility (fusedopt always runs its own
    multi-tensor kernels, which are CUDA-graph capturable). fusedopt's own
    keywords:

    * ``max_grad_norm``: clip by the global L2 norm inside the step (one extra
      read of the grads instead of torch's three passes); the pre-clip norm is
      left in ``last_grad_norm`` as a device tensor.
    * ``max_grad_value``: clamp each (unscaled) grad element to
      ``[-max_grad_value, max_grad_value]`` as it is read, as
      ``clip_grad_value_`` would; with ``max_grad_norm`` too, the norm is that of
      the clamped grads (torch's idiom order: unscale, clip by value, clip by norm).
    * ``master_weights``: keep an fp32 copy of fp16/bf16 params in the state
      (``master_param``) and update it in the same pass.
    * ``state_dtype``: dtype of exp_avg/exp_avg_sq (e.g. ``torch.bfloat16`` to
      halve the state's memory traffic); default: the param's dtype, or fp32
      with master weights.
    * ``norm_group``: the ranks ``max_grad_norm``'s norm is global over when
      each rank steps only part of a model's plain-tensor params (ZeRO): a
      ``ProcessGroup``, ``'world'``, or ``'local'`` (DDP: the rank's own norm is
      the global one). DTensor params are always clipped by their global norm.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        norm_group=None,
        max_grad_value: float | None = None,
    ) -> None:
        _check_adam_args(lr, betas, eps, weight_decay, foreach, capturable)
        if state_dtype is torch.float16:
            raise ValueError(
                "state_dtype=torch.float16 is refused for Adam: exp_avg_sq holds squared gradients, which "
                "underflow float16 (|g| < 2.4e-4 squares to 0). Use torch.bfloat16 to halve the state's traffic."
            )
        betas = tuple(map(_to_scalar, betas))
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(
            params,
            defaults,
            max_grad_norm=max_grad_norm,
            master_weights=master_weights,
            state_dtype=state_dtype,
            norm_group=norm_group,
            max_grad_value=max_grad_value,
        )

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("fused", None)

    def _init_state(self, p: Tensor, state: dict, amsgrad: bool) -> None:
        # the step lives on the param's device as a float32 0-dim tensor, as in
        # torch's fused/capturable mode: no host sync to advance it
        sd = self._state_dtype_for(p)
        # (a meta param has no values to count steps with: its step lives on the
        # CPU, as all of torch's non-capturable steps do)
        step_device = "cpu" if p.device.type == "meta" else p.device
        state["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
        state["exp_avg"] = torch.zeros_like(p, dtype=sd, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=sd, memory_format=torch.preserve_format)
        if amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(p, dtype=sd, memory_format=torch.preserve_format)

    def _plan_signature(self, group: dict) -> tuple:
        return super()._plan_signature(group) + (bool(group["amsgrad"]),)

    def _check_group(self, group: dict, index: int) -> None:
        _validate.check_adam_group(group, index)

    def _native_plan_for(self, bucket: Bucket, group: dict):
        return _native_plan.adam(bucket.params, bucket.grads, _state_lists(bucket), bool(group["amsgrad"]))

    def _torch_group_step(self, group: dict) -> None:
        _torch_impl.adam_group(self, group)

    def _route(self, p: Tensor, g: Tensor, group: dict, occurrence: int = 0) -> Route:
        if g.is_sparse:
            raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
        _validate.check_fused_device(p, group)
        _validate.check_adam_grad_dtype(type(self).__name__, p, g)
        amsgrad = group["amsgrad"]
        state = self.state[p]
        if not state:
            self._init_state(p, state, amsgrad)
        elif amsgrad and "max_exp_avg_sq" not in state:
            # amsgrad switched on after the state was made: start its max at 0
            state["max_exp_avg_sq"] = torch.zeros_like(state["exp_avg_sq"])
        names = [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"), ("steps", "step")]
        if amsgrad:
            names.append(("max_exp_avg_sqs", "max_exp_avg_sq"))
        master = self._master_for(p, state)
        if master is not None:
            names.append(("masters", "master_param"))
        _validate.check_state(p, g, state, [k for _, k in names])
        tensors = {name: state[k] for name, k in names}
        moments = [tensors["exp_avgs"], tensors["exp_avg_sqs"]] + ([tensors["max_exp_avg_sqs"]] if amsgrad else [])
        native = native_eligible(p, g, moments) and (master is None or master.is_contiguous())
        if native:
            key = (p.device, "native", p.dtype, g.dtype, moments[0].dtype, master is not None, layout_of(p))
        else:
            # one reference bucket per device and master-or-not, so its lists align
            key = (p.device, "reference", master is not None)
        return Route(key, "native" if native else "reference", tensors, [(state, k) for _, k in names])

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        beta1, beta2 = group["betas"]
        if _betas_stay_on_device(beta1, beta2):
            # the native op takes float betas; reading these on the host would be a
            # sync (or, compiled, a graph break): the reference's device math instead
            ops = _ops.reference
        else:
            beta1, beta2 = float(beta1), float(beta2)
        lr, lr_tensor = self._lr_args(group["lr"], device, ops)
        plan = bucket.native_plan
        if plan is not None and ops is not _ops.reference and plan.flag == bool(group["amsgrad"]):
            step = plan.adam_step_  # the same arguments, after the lists the plan holds
        else:
            if plan is not None:
                plan.release()  # the grads it holds for this step: the list op or the reference updates
            step = partial(ops.adam_, bucket.params, bucket.grads, *_state_lists(bucket))
        step(
            lr,
            lr_tensor,
            beta1,
            beta2,
            float(group["eps"]),
            float(group["weight_decay"]),
            bool(group["decoupled_weight_decay"]),
            bool(group["amsgrad"]),
            bool(group["maximize"]),
            amp.grad_scale,
            amp.found_inf,
            amp.sumsq,
            self.max_grad_norm or 0.0,
            self.max_grad_value or 0.0,
        )


def _state_lists(bucket: Bucket) -> tuple:
    """adam_'s lists after params and grads, in its order."""
    lists = bucket.lists
    return lists["exp_avgs"], lists["exp_avg_sqs"], lists["max_exp_avg_sqs"], lists["steps"], lists["masters"]


class AdamW(Adam):
    """AdamW (decoupled weight decay) on fused kernels; see :class:`Adam`.

    Takes every argument of ``torch.optim.AdamW`` with the same defaults
    (``weight_decay=1e-2``).
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        norm_group=None,
        max_grad_value: float | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            max_grad_norm=max_grad_norm,
            master_weights=master_weights,
            state_dtype=state_dtype,
            norm_group=norm_group,
            max_grad_value=max_grad_value,
        )

    # A checkpoint of any Adam loads into AdamW as AdamW, as in torch.
    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
