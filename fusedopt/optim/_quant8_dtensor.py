"""8-bit states of DTensor params (FSDP2, HSDP, tensor parallel).

The kernels update each rank's local shard of a DTensor param as a plain
tensor (fusedopt/_dtensor.py), so the quant blocks of its 8-bit states are cut
from each rank's local flat memory: blocks of 256 elements of the local shard,
the last one shorter. A rank never needs another rank's codes or scales, and a
step issues no collective for them. (Blocks of the global flat tensor would
straddle shards.)

What a rank keeps, so that torch.distributed.checkpoint (DCP) saves and loads
them as it does any DTensor state:

- ``state[name]``: the uint8 codes, a DTensor laid out exactly like the param
  (its local shard holds the codes of the param's local shard);
- ``state[name + "_absmax"]``: the float32 block scales, a DTensor of global
  shape ``(m_1, ..., m_k, B + T)``: one dim per mesh dim that shards the param
  (its size that mesh dim's size, placed ``Shard(j)`` on it; ``Replicate()`` on
  the other mesh dims) and a last dim of B, the most blocks any rank's local
  shard can have, plus the T = 1 + 2k values of the layout tag. Each rank's
  local piece is then ``(1, ..., 1, B + T)``: even, as DCP wants, holding the
  rank's scales, zeros up to B, then the tag.

The blocks depend on how the param is sharded: codes resharded by DCP onto
another sharding would be read with another rank's scales. The scales' global
shape holds the sharding mesh dims' sizes, so DCP refuses a load under other
sizes ("Size mismatch ... _absmax") before anything is written. Under the same
sizes but other placements (another tensor dim sharded, a strided shard) the
shapes can agree: the tag, k then each sharding placement's tensor dim and
split factor (small integers, exact in float32), is saved with the scales, and
a step after such a load refuses before writing, naming both layouts. To
change the sharding, save ``fusedopt.optim.dequantized_state_dict(...)``
(float32 DTensors, which DCP reshards) and load that: an 8-bit optimizer
quantizes what it loads.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# (imported by _quant8_states.py and _param_state.py only once a DTensor param has 8-bit states,
# when fusedopt/_quant8.py's maps are needed anyway)
from .. import _dtensor, _quant8
from ._quant8_names import ABSMAX


class _Layout(NamedTuple):
    placements: tuple  # of the scales, on p's mesh
    shape: tuple  # the scales' global shape
    local_shape: tuple  # each rank's piece
    blocks: int  # B: the most blocks of a local shard (the tag follows them)
    tag: tuple  # k, then each sharding placement's tensor dim and split factor


def _layout(p: Tensor) -> _Layout:
    """The scales of DTensor p's 8-bit states. B is computed from p's global
    shape and placements alone (no collective), so every rank finds the same:
    each sharding placement leaves at most ceil(size / mesh size) along its dim
    (torch.chunk's first chunk is the largest, and nested shards nest that);
    a local shard past it is refused (_local_blocks)."""
    from torch.distributed.tensor import Replicate, Shard

    mesh = p.device_mesh
    sizes = list(p.shape)
    sharding, tag = [], []
    for i, placement in enumerate(p.placements):
        if placement.is_replicate():
            continue
        if placement.is_partial():
            raise ValueError(f"fusedopt: state_dtype='8bit' takes no Partial parameter ({_dtensor._layout(p)})")
        sharding.append(i)
        dim = placement.dim
        tag += [dim, getattr(placement, "split_factor", 1)]
        sizes[dim] = -(-sizes[dim] // mesh.size(i))
    blocks = _quant8.num_blocks(math.prod(sizes))
    placements = [Replicate()] * mesh.ndim
    for j, i in enumerate(sharding):
        placements[i] = Shard(j)
    tag = (len(sharding), *tag)
    width = blocks + len(tag)
    return _Layout(tuple(placements), tuple(mesh.size(i) for i in sharding) + (width,),
                   (1,) * len(sharding) + (width,), blocks, tag)


def _local_blocks(p: Tensor, layout: _Layout) -> int:
    blocks = _quant8.num_blocks(p._local_tensor.numel())
    if blocks > layout.blocks:
        # (a placement whose shards are not torch.chunk's: refused, never cut short)
        raise NotImplementedError(
            f"fusedopt: state_dtype='8bit' of a DTensor parameter laid out as {_dtensor._layout(p)}: its local "
            f"shard of shape {tuple(p._local_tensor.shape)} has {blocks} blocks, more than the {layout.blocks} "
            "this layout expects; use state_dtype=None or torch.bfloat16 for it (or raise min_8bit_size)"
        )
    return blocks


def quantize(p: Tensor, local_value: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """(codes, scales) DTensors of the local shard ``local_value`` of a float
    state of DTensor p."""
    from torch.distributed.tensor import DTensor

    layout = _layout(p)
    blocks = _local_blocks(p, layout)
    codes, absmax = _quant8.quantize_blockwise(local_value.detach().to(torch.float32).contiguous(), signed)
    padded = torch.zeros(layout.local_shape, dtype=torch.float32, device=absmax.device)
    flat = padded.view(-1)
    flat[:blocks] = absmax
    flat[layout.blocks:] = torch.tensor(layout.tag, dtype=torch.float32)
    mesh = p.device_mesh
    codes = DTensor.from_local(codes.contiguous(), mesh, p.placements, run_check=False, shape=p.shape,
                               stride=p.stride())
    scales = DTensor.from_local(padded, mesh, layout.placements, run_check=False, shape=torch.Size(layout.shape),
                                stride=torch.empty(layout.shape, device="meta").stride())
    return codes, scales


def local_scales(p: Tensor, scales: Tensor) -> Tensor:
    """The rank's block scales as the kernels take them: a 1-D view of the
    scales' local piece, one per block of p's local shard (writes go to it)."""
    return scales._local_tensor.view(-1)[: _quant8.num_blocks(p._local_tensor.numel())]


def local_tensors(p: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    """A rule call's 8-bit state tensors of DTensor p (codes, then scales, as
    _quant8_states.tensors_of lists them), as the local tensors the kernels
    update; check_states has passed."""
    half = len(tensors) // 2
    return [t._local_tensor for t in tensors[:half]] + [local_scales(p, t) for t in tensors[half:]]


def check_states(p: Tensor, state: dict, names: list[str]) -> None:
    """Each 8-bit state of DTensor p: codes laid out like p, scales laid out as
    _layout says (a checkpoint of another sharding, say, is refused before
    anything is written, naming what differs)."""
    layout = _layout(p)
    placements, shape, local_shape = layout.placements, layout.shape, layout.local_shape
    _local_blocks(p, layout)
    for name in names:
        codes, scales = state.get(name), state.get(name + ABSMAX)
        if not isinstance(codes, Tensor) or not isinstance(scales, Tensor):
            raise RuntimeError(f"fusedopt: the 8-bit state '{name}' of a parameter needs tensors '{name}' (uint8 "
                               f"codes) and '{name}{ABSMAX}' (float32 block scales)")
        local_codes = _dtensor.local_state(p, codes, name)  # raises unless laid out like p
        if codes.dtype is not torch.uint8:
            raise RuntimeError(f"fusedopt: state['{name}'] of an 8-bit DTensor parameter is {codes.dtype}; it must "
                               "be uint8 codes laid out like the parameter")
        expected = f"a float32 DTensor of shape {shape} laid out as {placements} on {p.device_mesh}"
        if not _dtensor.is_dtensor(scales):
            found = f"a plain tensor of shape {tuple(scales.shape)}"
        elif (scales.dtype is not torch.float32 or scales.shape != shape or scales.device_mesh != p.device_mesh
              or tuple(scales.placements) != placements or scales._local_tensor.shape != local_shape):
            found = f"a {scales.dtype} DTensor of shape {tuple(scales.shape)} laid out as {_dtensor._layout(scales)}"
        else:
            found = None
        if found is not None:
            raise RuntimeError(
                f"fusedopt: state['{name}{ABSMAX}'] of an 8-bit DTensor parameter of shape {tuple(p.shape)} laid "
                f"out as {_dtensor._layout(p)} is {found}; it must be {expected} (the scales of the blocks of each "
                "rank's local shard). A checkpoint saved under another sharding cannot be loaded as 8-bit states: "
                "save fusedopt.optim.dequantized_state_dict(...) instead, which loads under any sharding"
            )
        saved = scales._local_tensor.reshape(-1)[layout.blocks:]
        if saved.tolist() != list(layout.tag):  # (a host read, only when a plan is built)
            raise RuntimeError(
                f"fusedopt: state['{name}{ABSMAX}'] of an 8-bit DTensor parameter of shape {tuple(p.shape)} laid out "
                f"as {_dtensor._layout(p)} holds the blocks of another sharding (its layout tag is "
                f"{_tag_text(saved.tolist())}, this parameter's {_tag_text(layout.tag)}): a checkpoint saved under "
                "other placements cannot be loaded as 8-bit states; save fusedopt.optim.dequantized_state_dict(...) "
                "instead, which loads under any sharding"
            )
        for t, key in ((local_codes, name), (scales._local_tensor, name + ABSMAX)):
            if t.device != p._local_tensor.device:
                raise RuntimeError(f"fusedopt: state['{key}'] is on {t.device} but its parameter on {p.device}")
            if not t.is_contiguous():
                raise RuntimeError(f"fusedopt: the local shard of state['{key}'] of an 8-bit DTensor parameter is "
                                   "not contiguous (its blocks are cut from the local flat memory)")


def _tag_text(tag) -> str:
    """A layout tag as its sharding placements: (tensor dim, split factor) each."""
    values = [int(v) if float(v).is_integer() else v for v in tag]
    pairs = values[1:]
    return "[" + ", ".join(f"dim {d} split {f}" for d, f in zip(pairs[::2], pairs[1::2])) + "]" if pairs else "[]"


def dequantize(codes: Tensor, scales: Tensor, signed: bool) -> Tensor:
    """The float32 values of a DTensor 8-bit state: a DTensor laid out like
    its codes (no param needed: the codes' local shard says how many of the
    local scales are its blocks)."""
    from torch.distributed.tensor import DTensor

    if not (_dtensor.is_dtensor(codes) and _dtensor.is_dtensor(scales)):
        raise ValueError(
            "fusedopt: an 8-bit state's codes and block scales must both be DTensors or both plain tensors; got "
            f"{type(codes).__name__} codes and {type(scales).__name__} scales"
        )
    local = codes._local_tensor.contiguous()
    flat = scales._local_tensor.reshape(-1)
    blocks = _quant8.num_blocks(local.numel())
    if flat.numel() < blocks:
        raise ValueError(f"fusedopt: a local shard of {local.numel()} codes needs {blocks} block scales; its "
                         f"scales' local piece holds {flat.numel()}")
    values = _quant8.dequantize_blockwise(local, flat[:blocks].to(local.device), signed)
    return DTensor.from_local(values, codes.device_mesh, codes.placements, run_check=False, shape=codes.shape,
                              stride=codes.stride())
