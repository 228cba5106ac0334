"""The lists one update of the plain-torch fallback (reference.py) computes on:
working copies where a tensor cannot be updated in place, the write-back, and
the gradients as the update sees them."""

from __future__ import annotations

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


def real(tensors: list[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def in_place(stored: list[Tensor], dtype: torch.dtype, keep: Tensor | None) -> bool:
    """Whether an update computes on ``stored`` itself (its dtype, no found_inf):
    then it needs neither working() nor store()."""
    return keep is None and all(t.dtype == dtype for t in stored)


def working(stored: list[Tensor], dtype: torch.dtype, keep: Tensor | None) -> list[Tensor]:
    """The tensors an update computes on where it cannot compute on ``stored``
    in place: float32 copies of half-precision tensors and, with a found_inf,
    copies of the others, written back by store()."""
    return [t.to(dtype) if t.dtype != dtype else t if keep is None else t.clone() for t in stored]


def workings(stored: list[list[Tensor]], dtype: torch.dtype, keep: Tensor | None):
    """(the lists an update computes on, whether each is a copy to store back)
    for each of ``stored`` (empty lists stay empty)."""
    # (len, not bool: dynamo before torch 2.13 cannot trace bool() of a list)
    copied = [len(lst) > 0 and not in_place(lst, dtype, keep) for lst in stored]
    return [working(lst, dtype, keep) if c else lst for lst, c in zip(stored, copied)], copied


def store_all(ops, stored: list[list[Tensor]], work: list[list[Tensor]], copied: list[bool], keep) -> None:
    """store() for each working copy that workings() made."""
    for st, w, c in zip(stored, work, copied):
        if c:
            store(ops, st, w, keep)


def store(ops, stored: list[Tensor], work: list[Tensor], keep: Tensor | None) -> None:
    """Writes the working copies back (rounding half precision once); with a
    found_inf, through torch.where, so a skipped step writes the old bits."""
    if keep is None:
        # (without a found_inf the only copies are of another dtype; no identity
        # tests: dynamo before torch 2.13 cannot trace `is` between lists)
        pairs = [(d, s) for d, s in zip(stored, work) if d.dtype != s.dtype]
        if pairs:
            ops.copy_([d for d, _ in pairs], [s for _, s in pairs])
        return
    for d, s in zip(stored, work):
        select_into(d, keep, s)


def select_into(dst: Tensor, cond: Tensor, new: Tensor, old: Tensor | None = None) -> None:
    """dst := where(cond, new, old), old by default dst itself: one pass where
    torch.where can write dst (its dtype, eagerly: dynamo refuses an out= it
    cannot prove contiguous), else a copy of the selection."""
    old = dst if old is None else old
    if not torch.compiler.is_compiling() and dst.dtype == new.dtype:
        torch.where(cond, new, old, out=dst)
    else:
        dst.copy_(torch.where(cond, new, old))


def prepared_grads(ops, grads: list[Tensor], dtype: torch.dtype, factors, device) -> tuple[list[Tensor], bool]:
    """The gradients the update sees: unscaled, clamped, clipped, negated for
    maximize, in the working dtype (complex grads stay complex: torch's SGD
    computes on them as they are, its Adam on their real views); and whether
    the list holds only tensors made here (which the update may then write:
    never the grads)."""
    inv, bound, clip, maximize = factors
    gs = grads
    if not all(g.dtype == dtype for g in gs):
        gs = [g if g.dtype == dtype else g.to(dtype) for g in gs]
    own = False
    if inv is not None:
        # (a float32 factor cast to a float64 working dtype is exact: the product
        # is the one a mixed-dtype multiply gives)
        gs, own = ops.mul_tensor(gs, inv.to(device, real_dtype(dtype))), True
    if bound is not None:
        # (complex grads: their real views, as clip_grad_value_ would have to)
        if own:
            ops.clamp_min_(real(gs), -bound)
        else:
            gs, own = [_as(g, c) for g, c in zip(gs, ops.clamp_min(real(gs), -bound))], True
        ops.clamp_max_(real(gs), bound)
    if clip is not None:
        if own:
            ops.mul_tensor_(gs, clip.to(device, real_dtype(dtype)))
        else:
            gs, own = ops.mul_tensor(gs, clip.to(device, real_dtype(dtype))), True
    if maximize:
        if own:
            ops.neg_(gs)
        else:
            gs, own = ops.neg(gs), True
    return gs, own


def _as(like: Tensor, r: Tensor) -> Tensor:
    return torch.view_as_complex(r) if like.is_complex() else r


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


def working_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in LOW_PRECISION else t.dtype
