"""``stochastic_rounding=True``: bf16/fp16 params updated in float32 and stored
with stochastic rounding (fusedopt/_stochastic.py and csrc/math/stochastic.h
define the rounding and the generator), without an fp32 master.

Each param's generator state is ``state["rounding_key"]``, an int64 tensor of
two values on the param's device (a meta param's: the CPU), so it lives in
torch's state_dict and a resumed run continues the stream:

* ``[0]``: the param's 64-bit seed (its bits as an int64), splitmix64 of the
  optimizer's seed plus the param's index in the optimizer's flattened param
  list when the state was made: the same on every rank and for any bucketing;
* ``[1]``: how many steps have been applied to the param. It advances on the
  device, after an applied step only (a skipped AMP step leaves it), so the
  step reads nothing on the host.

Element i of a param (its index in the whole, unsharded, flattened tensor) at
applied step t takes the random word of (seed, t, i). For a DTensor whose
placements are Shard(0) and Replicate only (FSDP2, HSDP), a rank's local
shard is a run of whole rows of the global tensor and takes the indices from
its global offset on: the rounding is the same bits however the param is
sharded. Other placements (Shard(1), tensor parallel) key by the local index.

The CPU kernels round in their param store (the rules' ops take the keys and
offsets as ``rounding_keys`` / ``rounding_offsets``). The plain-torch path
(``with_rounding``: the other devices, non-contiguous params, no native
library) is the rule's own reference with a float32 temporary of the param as
its master (the arithmetic of master_weights=True, the master thrown away),
then the temporary rounded into the param: the same bits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _dtensor, _stochastic

KEY = "rounding_key"
_ROUNDED = (torch.bfloat16, torch.float16)


def check_options(stochastic_rounding, master_weights, seed) -> None:
    if not isinstance(stochastic_rounding, bool):
        raise TypeError(f"stochastic_rounding must be a bool, got {type(stochastic_rounding).__name__}")
    if stochastic_rounding and master_weights:
        raise ValueError(
            "stochastic_rounding=True cannot be combined with master_weights=True: stochastic rounding is the "
            "way to train bf16/fp16 params without an fp32 master (with a master, the param is its rounding)"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64):
        raise ValueError(f"Invalid seed: {seed!r} (None or an int in [0, 2**64))")


def check_param_dtypes(name: str, params) -> None:
    """Refuses params that stochastic rounding cannot round to (before any write)."""
    for i, p in enumerate(params):
        if p.dtype not in _ROUNDED:
            raise ValueError(
                f"fusedopt.{name}: stochastic_rounding=True rounds bfloat16/float16 params; param {i} is "
                f"{p.dtype} (its updates need no rounding: leave stochastic_rounding off, or put it in an "
                "optimizer of its own)"
            )


def new_key(optimizer_seed: int, index: int, device: torch.device) -> Tensor:
    seed = _stochastic.splitmix64((optimizer_seed + index) & 0xFFFFFFFFFFFFFFFF)
    on = torch.device("cpu") if device.type == "meta" else device
    return torch.tensor([_stochastic.as_int64(seed), 0], dtype=torch.int64, device=on)


def check_key(p: Tensor, key) -> None:
    if not isinstance(key, Tensor) or key.dtype is not torch.int64 or key.shape != (2,):
        what = f"{key.dtype} tensor of shape {tuple(key.shape)}" if isinstance(key, Tensor) else type(key).__name__
        raise RuntimeError(
            f"fusedopt: state['{KEY}'] of a parameter is a {what}; it must be an int64 tensor of 2 values "
            "(seed, applied steps)"
        )
    want = torch.device("cpu") if p.device.type == "meta" else p.device
    if key.device != want:
        raise RuntimeError(f"fusedopt: state['{KEY}'] of a parameter on {p.device} is on {key.device}")


def global_offset(p: Tensor) -> int:
    """Where p's (local) elements start in the flattened global tensor: 0 for a
    plain tensor; a Shard(0)/Replicate DTensor's first local row times the row
    size; other DTensor placements key by the local index (0)."""
    if not _dtensor.is_dtensor(p):
        return 0
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if not all(isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim == 0) for pl in p.placements):
        return 0
    if p.dim() == 0:
        return 0
    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return int(offset[0]) * math.prod(p.shape[1:])


def with_rounding(reference):
    """``reference`` (a rule's plain-torch op) that also takes the native op's
    ``rounding_keys`` and ``rounding_offsets``."""

    def run(params, grads, states, counters, masters, hyper, hyper_tensor, lr, lr_tensor, grad_scale, found_inf,
            sumsq, max_norm, max_value=0.0, maximize=False, rounding_keys=None, rounding_offsets=None):
        if not rounding_keys:
            return reference(params, grads, states, counters, masters, hyper, hyper_tensor, lr, lr_tensor,
                             grad_scale, found_inf, sumsq, max_norm, max_value, maximize)
        if masters or hyper_tensor is not None:
            raise RuntimeError("fusedopt: stochastic rounding takes no master_params and no hyper_tensor")
        return apply(reference, rounding_keys, rounding_offsets, params, grads, states, counters, hyper, lr,
                     lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize)

    return run


def apply(reference, keys: list[Tensor], offsets: list[int], params, grads, states, counters, hyper, lr, lr_tensor,
          grad_scale, found_inf, sumsq, max_norm, max_value, maximize) -> None:
    """The rule's update of bf16/fp16 ``params`` with stochastic rounding:
    ``reference`` (the rule's plain-torch op, 8-bit states included) on float32
    temporaries as masters, each key's step advanced where the step applies,
    then each temporary rounded into its param."""
    temps = [p.detach().float() for p in params]
    reference(params, grads, states, counters, temps, hyper, None, lr, lr_tensor, grad_scale, found_inf, sumsq,
              max_norm, max_value, maximize)
    keep = None if found_inf is None else found_inf.reshape(()) == 0
    for p, t, key, offset in zip(params, temps, keys, offsets):
        key[1:].add_(1 if keep is None else keep.to(key.device, torch.int64))
        rounded = _stochastic.round_keyed(t, p.dtype, key, offset)
        if keep is not None:
            # a skipped step keeps every bit (a NaN's payload included)
            rounded = torch.where(keep.to(p.device), rounded, p)
        p.copy_(rounded)
