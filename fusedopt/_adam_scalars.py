"""Adam's per-tensor step scalars, for all of a group's step counters at once,
on the device: the doubles torch's single-tensor code computes on the host.

torch computes, per param, from ``step = float(state["step"])``::

    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    step_size = lr / bias_correction1

Python's ``**`` on floats is the C library's ``pow``. Here the counters are
stacked into one float64 vector and the same operations run on it. Two
details keep the results those doubles:

* ATen's CPU kernels compute a contiguous float64 operand with vectorized
  code, whose ``pow`` (Sleef's) is not the C library's: it differs in the last
  bit for about 1 step value in 50. A strided operand runs the scalar loop,
  which calls ``std::pow``, the C library's. So each ``pow`` takes a strided
  view (a column of an (n, 2) tensor).
* ``x ** 0.5`` with a Python exponent becomes ``sqrt`` in ATen, which rounds
  differently from ``pow``; a tensor exponent keeps it a ``pow``.

``lr / bias_correction1`` is a true division (``full(lr).div_``): ``float /
tensor`` would multiply by the reciprocal. A tensor lr is divided in its own
dtype, as torch's ``lr / bias_correction1`` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_HALF = 0.5


def _one_at_a_time(x: Tensor) -> Tensor:
    """x's values in a strided view, which ATen's CPU kernels compute with their
    scalar loop (see the module docstring)."""
    wide = x.new_empty((x.numel(), 2))
    wide.select(1, 0).copy_(x)
    return wide.select(1, 0)


def adam_step_scalars(
    steps: list[Tensor], beta1: float | Tensor, beta2: float | Tensor, lr: float, lr_tensor: Tensor | None,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """(bias_correction2_sqrt, -step_size): one element per step counter, on
    `device` (float64; -step_size in a tensor lr's dtype)."""
    # (meta params keep their counters on the CPU: the scalars go to the meta device)
    s = _one_at_a_time(torch.stack(steps).to(device, torch.float64))
    b1, b2 = (b.to(device, torch.float64) if isinstance(b, Tensor) else b for b in (beta1, beta2))
    bias_correction1 = 1 - torch.pow(b1, s)
    bias_correction2 = 1 - torch.pow(b2, s)
    half = torch.full((), _HALF, dtype=torch.float64, device=device)
    bias_correction2_sqrt = torch.pow(_one_at_a_time(bias_correction2), half)
    if lr_tensor is None:
        step_size = torch.full_like(bias_correction1, lr).div_(bias_correction1)
    else:
        step_size = lr_tensor / bias_correction1.to(lr_tensor.dtype)
    return bias_correction2_sqrt, step_size.neg_()


def adam_host_scalars(steps: list[Tensor], beta1: float, beta2: float, lr: float) -> tuple[list[float], list[float]]:
    """(bias_correction2_sqrt, -step_size) as Python floats, computed on the
    host exactly as torch's single-tensor code computes them, from step
    counters in host memory (CPU tensors, eagerly: reading them is no sync).
    Several times cheaper than adam_step_scalars for a hundred tensors."""
    bias_correction2_sqrt, neg_step_size = [], []
    for step in steps:
        s = step.item()
        bias_correction1 = 1 - beta1**s
        bias_correction2_sqrt.append((1 - beta2**s) ** 0.5)
        # a count still 0 belongs to a step that a found_inf skips (counts advance
        # first): its update is computed and discarded, as adam_step_scalars'
        # division by zero is on the device
        neg_step_size.append(-(lr / bias_correction1) if bias_correction1 else -math.inf)
    return bias_correction2_sqrt, neg_step_size


def per_tensor(values: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """One 0-dim tensor per element, in the dtype of the tensors it scales (the
    cast a mixed-dtype op would make; the foreach kernels want it made)."""
    return values.to(dtype).unbind(0)
