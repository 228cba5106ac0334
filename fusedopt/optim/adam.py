"""fusedopt.Adam and fusedopt.AdamW: drop-ins for torch.optim's classes."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ops, reference
from . import _torch_impl, _validate
from ._base import FusedOptimizer
from ._rule import Rule


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
      with master weights. ``"8bit"``: blockwise-quantized states (uint8 codes
      and a float32 scale per 256 elements, about 2 bytes per param for both
      moments) for params of at least ``min_8bit_size`` elements (default
      4096); smaller ones keep fp32 states.
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
        state_dtype: torch.dtype | str | None = None,
        norm_group=None,
        max_grad_value: float | None = None,
        min_8bit_size: int = 4096,
        stochastic_rounding: bool = False,
        seed: int | None = None,
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
        # fusedopt's own options, in FusedOptimizer's order
        super().__init__(
            params, defaults, max_grad_norm, master_weights, state_dtype, norm_group, max_grad_value,
            min_8bit_size=min_8bit_size, stochastic_rounding=stochastic_rounding, seed=seed,
        )

    # torch's Adam divides by its bias correction 1 - beta**step: zero after a step of -1
    _step_minus_one_refused = True

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

    def _check_group(self, group: dict, index: int) -> None:
        _validate.check_adam_group(group, index)

    def _torch_group_step(self, group: dict) -> None:
        _torch_impl.adam_group(self, group)

    def _special_route(self, p: Tensor, g: Tensor, group: dict):
        if g.is_sparse:
            raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
        _validate.check_fused_device(p, group)
        _validate.check_adam_grad_dtype(type(self).__name__, p, g)
        return None

    def _ops_for_group(self, ops, group: dict):
        # Eagerly the native op takes float betas; reading tensor ones on a GPU
        # would be a sync: the reference's device math instead. Compiled, the
        # native op reads them from its hyper_tensor (_compile.hyper_args).
        if torch.compiler.is_compiling() or not _betas_stay_on_device(*group["betas"]):
            return ops
        return _ops.reference


def _adam_hyper(group: dict) -> tuple:
    """adam_'s packed hyperparameters: beta1, beta2, eps, weight_decay, decoupled, amsgrad."""
    beta1, beta2 = group["betas"]
    return (beta1, beta2, group["eps"], group["weight_decay"], group["decoupled_weight_decay"], group["amsgrad"])


def _adam_reference(params, grads, states, counters, masters, hyper, hyper_tensor, lr, lr_tensor, grad_scale,
                    found_inf, sumsq, max_norm, max_value=0.0, maximize=False):
    """reference.adam_ with the list op's signature (fusedopt/optim/_rule.py)."""
    beta1, beta2, eps, weight_decay, decoupled, amsgrad = hyper
    if not _betas_stay_on_device(beta1, beta2):
        beta1, beta2 = float(beta1), float(beta2)  # read on the host, as torch's own path reads them
    n = len(params)
    m, v, vmax = states[:n], states[n : 2 * n], states[2 * n :]
    reference.adam_(params, grads, m, v, vmax, counters, masters, lr, lr_tensor, beta1, beta2, float(eps),
                    float(weight_decay), bool(decoupled), bool(amsgrad), maximize, grad_scale, found_inf, sumsq,
                    max_norm, max_value)


Adam.rule = Rule(
    name="adam",
    states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    signed=(True, False, False),
    counter="step",
    active=lambda group: 3 if group["amsgrad"] else 2,
    hyper=_adam_hyper,
    reference=_adam_reference,
    optional=("max_exp_avg_sq",),
)


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
        state_dtype: torch.dtype | str | None = None,
        norm_group=None,
        max_grad_value: float | None = None,
        min_8bit_size: int = 4096,
        stochastic_rounding: bool = False,
        seed: int | None = None,
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
            min_8bit_size=min_8bit_size, stochastic_rounding=stochastic_rounding, seed=seed,
        )

    # A checkpoint of any Adam loads into AdamW as AdamW, as in torch.
    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
