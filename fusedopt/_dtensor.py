"""DTensor parameters (FSDP2, HSDP, tensor parallel) seen as their local shards.

The kernels update each rank's local shard of a DTensor param with the local
shards of its grad and of its states. The states themselves stay DTensors of the
param's mesh and placements (``zeros_like(p)``, as torch.optim makes them), so
``state_dict()``, torch.distributed.checkpoint and ``get_state_dict`` see what they
see with torch.optim. A local shard is only the right thing to update when the
grad and every state are laid out exactly like the param; anything else is
refused here with an error that names the mismatch (torch would redistribute
implicitly; fusedopt does not issue collectives behind the user's back).

``DTensor._local_tensor`` is the unwrap: ``to_local()`` returns the same tensor
but costs ~2 us per call (~12 us with grad mode on) against ~30 ns, and the step
unwraps every grad every step.
"""

from __future__ import annotations

from itertools import repeat
from operator import attrgetter, is_

import torch
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch built without torch.distributed
    DTensor = None

_PLAIN = (Tensor, torch.nn.Parameter)

local_of = attrgetter("_local_tensor")


def is_dtensor(t) -> bool:
    return type(t) not in _PLAIN and DTensor is not None and isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor; any other tensor as it is."""
    return t._local_tensor if is_dtensor(t) else t


def _layout(t: Tensor) -> str:
    return f"{tuple(t.placements)} on {t.device_mesh}"


def check_grad(p: Tensor, g: Tensor) -> bool:
    """Whether (p, g) is a DTensor pair, after checking that the grad's local
    shard is the param's: same mesh, placements and global shape."""
    p_dt, g_dt = is_dtensor(p), is_dtensor(g)
    if not (p_dt or g_dt):
        return False
    if not (p_dt and g_dt):
        which = "a DTensor parameter has a plain-tensor grad" if p_dt else "a plain-tensor parameter has a DTensor grad"
        raise TypeError(f"fusedopt: {which}; a parameter and its grad must both be DTensors or both be plain tensors")
    if g._spec is p._spec:  # FSDP2 builds each grad with its param's spec object
        return True
    if g.device_mesh != p.device_mesh or g.placements != p.placements or g.shape != p.shape:
        raise ValueError(
            f"fusedopt: a DTensor parameter of shape {tuple(p.shape)} laid out as {_layout(p)} has a grad of "
            f"shape {tuple(g.shape)} laid out as {_layout(g)}. fusedopt updates each rank's local shard, so the "
            "grad must be laid out like its parameter (a Partial grad is not reduced for you): call "
            "grad.redistribute(param.device_mesh, param.placements) before the step"
        )
    return True


def local_state(p: Tensor, t: Tensor, name: str) -> Tensor:
    """The local shard of state ``name`` of DTensor param ``p``. 0-dim plain
    tensors (``step``, SGD's first-step flags) are per-rank scalars and stay as
    they are."""
    if is_dtensor(t):
        if t._spec is p._spec or (t.device_mesh == p.device_mesh and t.placements == p.placements and t.shape == p.shape):
            return t._local_tensor
        what = f"is laid out as {_layout(t)} with shape {tuple(t.shape)}"
    elif t.dim() == 0 or name == "rounding_keys":
        return t  # (the stochastic rounding key, per rank as a step is)
    else:
        what = f"is a plain tensor of shape {tuple(t.shape)}"
    raise ValueError(
        f"fusedopt: state {name!r} of a DTensor parameter of shape {tuple(p.shape)} laid out as {_layout(p)} "
        f"{what}; it must be a DTensor laid out like its parameter (torch.distributed.checkpoint's "
        "set_optimizer_state_dict loads states that way)"
    )


def local_grads(grads: list, specs: list) -> list[Tensor] | None:
    """The local shards of ``grads``, or None when a grad is not laid out as the
    one the cached bucket was built for (its spec is compared by identity first: FSDP2
    reuses its param's spec object, so this costs nothing there)."""
    if not all(map(is_, map(getattr, grads, repeat("_spec"), repeat(None)), specs)):
        for g, spec in zip(grads, specs):
            if not is_dtensor(g) or g._spec != spec:
                return None
    return list(map(local_of, grads))


def spec_of(t: Tensor):
    return t._spec
