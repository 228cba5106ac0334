"""8-bit optimizer states in plain torch: any rule's reference update run on
float32 copies of its quantized states (fusedopt/_quant8.py holds the format).

A call with 8-bit states carries, where the fp32 call carries its ``active``
state lists, ``active`` lists of uint8 codes followed by ``active`` lists of
float32 block scales (absmax): ``states[k * n + i]`` the codes of state k of
param i, ``states[(active + k) * n + i]`` their scales (the native op's order).

Each state is dequantized into a float32 temporary, the rule's own reference
updates the temporaries as it updates fp32 states, and each is quantized back
in place. The CPU kernels do the same block by block, so both agree bit for bit
wherever the rule's fp32 paths do. A skipped AMP step (found_inf set) keeps the
old codes and scales: requantizing dequantized values is not the identity.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor



def is_8bit(states: Sequence[Tensor]) -> bool:
    """Whether a call's state lists are 8-bit (their first list is uint8 codes)."""
    return len(states) > 0 and states[0].dtype is torch.uint8


def step(reference: Callable, signed: Sequence[bool], params, grads, states, counters, masters, hyper,
         hyper_tensor, lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value=0.0, maximize=False):
    """``reference``'s update of params whose states are 8-bit; ``signed[k]``:
    whether state k uses the signed map."""
    from ._quant8 import dequantize_blockwise, quantize_blockwise  # (its maps cost 50 ms to make: when used)

    n = len(params)
    if n == 0:
        return
    if len(states) % (2 * n):
        raise RuntimeError(f"fusedopt: 8-bit states must hold code lists then absmax lists of {n} tensors each, "
                           f"got {len(states)} tensors")
    active = len(states) // (2 * n)
    codes, scales = states[: active * n], states[active * n:]
    floats = [
        dequantize_blockwise(codes[j], scales[j], signed[j // n]).contiguous() for j in range(active * n)
    ]
    reference(params, grads, floats, counters, masters, hyper, hyper_tensor, lr, lr_tensor, grad_scale, found_inf,
              sumsq, max_norm, max_value, maximize)
    skip = None if found_inf is None else found_inf.reshape(()) != 0
    for j, x in enumerate(floats):
        new_codes, new_scales = quantize_blockwise(x, signed[j // n])
        if skip is not None:
            new_codes = torch.where(skip, codes[j], new_codes)
            new_scales = torch.where(skip, scales[j], new_scales)
        codes[j].copy_(new_codes)
        scales[j].copy_(new_scales)


def with_8bit(reference: Callable, signed: Sequence[bool]) -> Callable:
    """``reference`` that also takes calls with 8-bit states."""

    def run(params, grads, states, *rest, **kwargs):
        if is_8bit(states):
            return step(reference, signed, params, grads, states, *rest, **kwargs)
        return reference(params, grads, states, *rest, **kwargs)

    return run
