"""8-bit optimizer states (state_dtype="8bit") as the optimizers keep them.

A state ``name`` of an 8-bit param is two tensors in the param's state dict:
``state[name]``, uint8 codes with the param's shape (contiguous), and
``state[name + "_absmax"]``, float32, one scale per block of 256 elements of
the flattened state (fusedopt/_quant8.py defines the maps and the format).
Each rule declares per state whether it uses the signed map (first moments,
momentum) or the unsigned one (second moments, Adagrad's sum): Rule.signed.

Here: making and checking those tensors, converting states when a checkpoint of
another format is loaded, and turning an 8-bit state_dict into torch.optim's.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from .. import _dtensor
from ._quant8_names import ABSMAX


# fusedopt/_quant8.py makes its maps when imported (50 ms): imported here when
# 8-bit states are used, not with fusedopt
def _q8():
    from .. import _quant8

    return _quant8


def quantize(value: Tensor, signed: bool, p: Tensor | None = None, name: str = "") -> tuple[Tensor, Tensor]:
    """(codes, absmax) of a float state of param ``p``, codes contiguous in its
    shape. For a DTensor p (``value`` laid out like it): both as DTensors, the
    blocks cut from each rank's local shard (see _quant8_dtensor.py)."""
    if p is not None and _dtensor.is_dtensor(p):
        from . import _quant8_dtensor

        return _quant8_dtensor.quantize(p, _dtensor.local_state(p, value, name), signed)
    codes, absmax = _q8().quantize_blockwise(value.detach().to(torch.float32).contiguous(), signed)
    return codes.contiguous(), absmax


def dequantize(codes: Tensor, absmax: Tensor, signed: bool) -> Tensor:
    """The float32 values of an 8-bit state (a DTensor laid out like its codes
    for DTensor codes)."""
    if _dtensor.is_dtensor(codes) or _dtensor.is_dtensor(absmax):
        from . import _quant8_dtensor

        return _quant8_dtensor.dequantize(codes, absmax, signed)
    return _q8().dequantize_blockwise(codes.contiguous(), absmax.to(codes.device), signed)


def tensors_of(state: dict, names: Iterable[str]) -> list[Tensor]:
    """A param's active state tensors as a rule call lists them: the states
    themselves, or for 8-bit states all codes, then all their scales."""
    names = list(names)
    if names and names[0] + ABSMAX in state:
        return [state[n] for n in names] + [state[n + ABSMAX] for n in names]
    return [state[n] for n in names]


def check_states(p: Tensor, state: dict, names: list[str]) -> None:
    """Each 8-bit state of p: uint8 codes of p's shape and float32 scales, one
    per block, on p's device (a checkpoint of another shape, say, is refused
    before anything is written). A DTensor p's: see _quant8_dtensor.check_states."""
    if _dtensor.is_dtensor(p):
        from . import _quant8_dtensor

        _quant8_dtensor.check_states(p, state, names)
        return
    for name in names:
        codes, absmax = state.get(name), state.get(name + ABSMAX)
        if not isinstance(codes, Tensor) or not isinstance(absmax, Tensor):
            raise RuntimeError(f"fusedopt: the 8-bit state '{name}' of a parameter needs tensors '{name}' (uint8 "
                               f"codes) and '{name}{ABSMAX}' (float32 block scales)")
        if codes.dtype is not torch.uint8 or codes.shape != p.shape:
            raise RuntimeError(
                f"fusedopt: state['{name}'] of an 8-bit parameter of shape {tuple(p.shape)} is {codes.dtype} of "
                f"shape {tuple(codes.shape)}; it must be uint8 codes of the parameter's shape"
            )
        blocks = _q8().num_blocks(p.numel())
        if absmax.dtype is not torch.float32 or absmax.shape != (blocks,):
            raise RuntimeError(
                f"fusedopt: state['{name}{ABSMAX}'] is {absmax.dtype} of shape {tuple(absmax.shape)}; a parameter "
                f"of {p.numel()} elements needs float32 scales of shape ({blocks},), one per block of 256"
            )
        for t, key in ((codes, name), (absmax, name + ABSMAX)):
            if t.device != p.device:
                raise RuntimeError(f"fusedopt: state['{key}'] is on {t.device} but its parameter on {p.device}")


def native_eligible(p: Tensor, g: Tensor, tensors: list[Tensor]) -> bool:
    """Whether the native kernels (CPU and CUDA) take p's 8-bit states: they
    cut quant blocks from the flat memory, so every tensor is contiguous."""
    return (
        p.is_contiguous() and g.is_contiguous()
        and all(type(t) is Tensor and t.is_contiguous() for t in tensors)
    )


# -- checkpoints ---------------------------------------------------------------------------


def convert_loaded(optimizer, p: Tensor, state: dict) -> None:
    """After a load: p's states in the format this optimizer keeps for p. An
    fp32 (or bf16...) state of an 8-bit param is quantized; an 8-bit state of a
    param that keeps float states is dequantized."""
    rule = optimizer.rule
    for name, signed in zip(rule.states, rule.signed):
        value = state.get(name)
        if not isinstance(value, Tensor):
            continue
        if name + ABSMAX in state:
            if optimizer._is_8bit(p):
                continue
            absmax = state.pop(name + ABSMAX)
            state[name] = dequantize(value, absmax, signed).to(optimizer._state_dtype_for(p))
        elif optimizer._is_8bit(p) and value.is_floating_point():
            state[name], state[name + ABSMAX] = quantize(value, signed, p, name)
