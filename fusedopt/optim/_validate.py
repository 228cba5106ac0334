"""What a step checks before its first kernel runs.

A step either runs whole or refuses with nothing modified, in any group. So
everything a kernel could trip over is checked up front:

* when a group's buckets are (re)built: each param's grad and state tensors
  (shapes, not only element counts; devices; grad dtypes), fused=True on
  devices torch's fused kernels refuse;
* on every step, per group (not per tensor): the hyperparameters, which a user
  or a scheduler may have changed since construction.

Where torch raises for the same input, the exception type is torch's.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)

try:  # torch's own check and message for fused=True (torch >= 2.3)
    from torch.optim.optimizer import _device_dtype_check_for_fused
except ImportError:  # pragma: no cover - older torch
    _device_dtype_check_for_fused = None


# -- fusedopt's own options ----------------------------------------------------------------


def check_positive_finite(name: str, value) -> None:
    """max_grad_norm / max_grad_value: None, or a finite number > 0."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"Invalid {name}: {value} (must be finite and > 0)")


def check_differentiable(name: str, differentiable: bool, fused, **kernel_options) -> None:
    """differentiable=True runs torch's own implementation, which has none of
    fusedopt's kernel options; fused=True refuses it as torch does."""
    if not differentiable:
        return
    if fused:
        raise RuntimeError("`fused` does not support `differentiable`")
    used = [k for k, v in kernel_options.items() if v not in (None, False)]
    if used:
        raise ValueError(
            f"fusedopt.{name}: {', '.join(used)} cannot be combined with differentiable=True: a differentiable "
            f"step runs torch's own implementation (through autograd), not fusedopt's kernels"
        )


# -- per param, when buckets are built ------------------------------------------------------


def check_fused_device(p: Tensor, group: dict, cuda_unsupported: bool = False) -> None:
    """fused=True: torch refuses params its fused kernels do not take (meta,
    complex, ...) with this message; so does fusedopt. ``cuda_unsupported``:
    the optimizer's torch counterpart has no fused CUDA kernel in this torch
    (its message then leaves CUDA out of the supported devices)."""
    if group.get("fused") and _device_dtype_check_for_fused is not None:
        _device_dtype_check_for_fused(p, cuda_unsupported)


def check_state(p: Tensor, g: Tensor, state: dict, keys, step_minus_one_refused: bool = False) -> None:
    """The grad and each state tensor must have p's shape and live on p's
    device; a step counter must hold one element."""
    shape = p.shape
    if g.shape != shape:
        raise RuntimeError(
            f"fusedopt: a parameter of shape {tuple(shape)} has a grad of shape {tuple(g.shape)}; "
            "a grad must have its parameter's shape"
        )
    for key in keys:
        t = state[key]
        if not isinstance(t, Tensor):
            raise RuntimeError(f"fusedopt: state['{key}'] of a parameter is a {type(t).__name__}, not a tensor")
        check_not_inference(t)
        if key == "step":
            if t.numel() != 1:
                raise RuntimeError(f"fusedopt: state['step'] of a parameter has {t.numel()} elements, not 1")
            if step_minus_one_refused:
                check_step_count(t)
            continue
        if not (t.is_floating_point() or t.is_complex()) or t.is_complex() != p.is_complex():
            # torch's ops refuse to mix such a state with the grad (a view of
            # another dtype assigned to .data, say); the kernels would write
            # float bits into it
            raise RuntimeError(
                f"fusedopt: state['{key}'] has dtype {t.dtype} for a parameter of dtype {p.dtype}; a state tensor "
                "must be floating point (complex for a complex parameter)"
            )
        if t.shape != shape:
            raise RuntimeError(
                f"fusedopt: state['{key}'] has shape {tuple(t.shape)} but its parameter has shape "
                f"{tuple(shape)}; a state tensor must have its parameter's shape (a checkpoint of another "
                "model, or a param whose .data was replaced after its state was made?)"
            )
        if t.device != p.device:
            raise RuntimeError(
                f"fusedopt: state['{key}'] is on {t.device} but its parameter is on {p.device}; "
                "state tensors must live on their parameter's device"
            )


def check_dense_momentum(state: dict | None) -> None:
    """A dense grad over a sparse momentum buffer (torch's SGD starts the buffer
    as a copy of the first grad, so a grad that was sparse then is sparse now):
    torch's SGD fails adding the two; so does fusedopt's, before any update."""
    buf = state.get("momentum_buffer") if state else None
    if isinstance(buf, Tensor) and buf.is_sparse:
        raise RuntimeError(
            "add(sparse, dense) is not supported. Use add(dense, sparse) instead. (fusedopt.SGD: a parameter's "
            "momentum buffer is sparse, started from a sparse grad, and its grad is now dense; torch's SGD "
            "refuses this with the same error)"
        )


def check_not_inference(t: Tensor) -> None:
    """torch refuses in-place updates of tensors made under torch.inference_mode()
    outside of it, with this message (a plain check here: the kernels write
    through pointers, which no dispatcher check sees)."""
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed.You can make a clone to get "
            "a normal tensor before doing inplace update.See https://github.com/pytorch/rfcs/pull/17 for more "
            "details. (fusedopt: a parameter or state tensor of this step was made under torch.inference_mode())"
        )


def check_step_count(step: Tensor) -> None:
    """A step count of -1 makes the next step's bias correction 1 - beta**0 zero:
    torch raises ZeroDivisionError dividing by it (its CPU and foreach steps
    read the count on the host); so does fusedopt, for counts on the CPU. A
    count on a GPU is not read (that would be a host sync on every rebuilt
    plan): its step gives what torch's fused and capturable steps give, inf/NaN."""
    if step.device.type == "cpu" and bool(step.eq(-1).any()):
        raise ZeroDivisionError(
            "float division by zero: a parameter's state['step'] is -1, so Adam's bias correction "
            "1 - beta1**(step + 1) is zero"
        )


def grad_dtype_is_extension(p: Tensor, g: Tensor) -> bool:
    """float32 grads of float16/bfloat16 params: fusedopt's documented extension
    (grads accumulated in fp32, e.g. with param.grad_dtype = torch.float32)."""
    return g.dtype is torch.float32 and p.dtype in _LOW_PRECISION


def check_adam_grad_dtype(name: str, p: Tensor, g: Tensor) -> None:
    """torch's Adam/AdamW refuse a grad whose dtype differs from its param's
    (every implementation: for-loop, foreach, fused); fusedopt refuses the same
    ones, except for its float32-grad extension."""
    if g.dtype is p.dtype or grad_dtype_is_extension(p, g):
        return
    raise RuntimeError(
        f"fusedopt.{name}: a {p.dtype} parameter has a {g.dtype} grad. Like torch.optim.{name}, fusedopt needs "
        f"a grad of the parameter's dtype; it also takes float32 grads for float16/bfloat16 parameters."
    )


# -- per group, every step ---------------------------------------------------------------------


def _check_real(group: dict, index: int, key: str, value, *, tensor_ok: bool) -> None:
    if isinstance(value, Tensor):
        # the constructor's check and message, for a value set after construction
        if value.numel() != 1:
            raise ValueError(f"Tensor {key} must be 1-element (param_groups[{index}]['{key}'] has {value.numel()})")
        if value.is_complex():
            raise TypeError(f"param_groups[{index}]['{key}'] is a complex tensor; it must be real")
        return
    if not isinstance(value, Real):
        raise TypeError(
            f"param_groups[{index}]['{key}'] must be a real number"
            f"{' or a 1-element tensor' if tensor_ok else ''}, got {type(value).__name__} {value!r}"
        )


def check_reals(group: dict, index: int, keys: tuple[str, ...], tensor_ok: tuple[str, ...] = ()) -> None:
    """Each group[key] a real number (or, for the keys in tensor_ok, a one-element
    real tensor). Runs every step: plain floats pass without a call."""
    for key in keys:
        value = group[key]
        if type(value) is not float:
            _check_real(group, index, key, value, tensor_ok=key in tensor_ok)


def check_adam_group(group: dict, index: int) -> None:
    check_reals(group, index, ("lr", "eps", "weight_decay"), tensor_ok=("lr",))
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"param_groups[{index}]['betas'] must hold 2 values, got {len(betas)}")
    beta1, beta2 = betas
    for i, beta in enumerate(betas):
        if type(beta) is not float:
            _check_real(group, index, f"betas[{i}]", beta, tensor_ok=True)
    # Tensor betas are not read here: on a GPU that would be a host sync every
    # step, and under torch.compile a data-dependent branch. torch does not
    # refuse them either (a tensor beta of 1 gives inf/NaN, not an error).
    beta1 = float("nan") if isinstance(beta1, Tensor) else float(beta1)
    beta2 = float("nan") if isinstance(beta2, Tensor) else float(beta2)
    if beta1 == 1.0:
        # torch: lr / (1 - beta1**step) raises this very error
        raise ZeroDivisionError(
            f"float division by zero: param_groups[{index}]['betas'][0] is 1.0, which makes Adam's bias "
            "correction 1 - beta1**step zero"
        )
    if beta2 == 1.0:
        # torch divides by sqrt(1 - beta2**step) = 0 and leaves NaN params; refuse instead
        raise ValueError(
            f"Invalid beta parameter at index 1: {beta2} (param_groups[{index}]; 1 - beta2**step would be 0 "
            "and every param NaN)"
        )


def check_sgd_group(group: dict, index: int) -> None:
    keys = ("lr", "momentum", "dampening", "weight_decay")
    check_reals(group, index, keys, tensor_ok=keys)
