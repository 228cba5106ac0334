"""torch's AMP idiom with fusedopt's classes, through the optimizer's native plans.

    scaler.unscale_(opt)                       # fusedopt.GradScaler
    fusedopt.clip_grad_norm_(params, max_norm)
    scaler.step(opt)

are three calls over one step's grads. Through the list ops each would take
every grad across the dispatcher and check it again (and Python would look
at each); the fused loop (the optimizer's max_grad_norm) binds them once, to
the native plans its bucket cache keeps. Here ``unscale_`` does the same:
where every param group reuses its cached buckets and every bucket has a plan,
the first plan_unscale_ binds all the step's grads (checking every plan before
anything is written) and each bucket's plan unscales its grads. The plans keep
them, and this module records which grads they hold (IdiomBinds); the clip
over exactly those grads and the step then re-check the plans (their tensors
and the grads' data pointers, in C++: csrc/plan_bound_ops.h) instead of
binding again, after checking here that every .grad is still the tensor bound.

Nothing is decided differently from the list ops: the same kernels run over
the same grads (bit for bit the same results; a global norm summed over several
buckets on one device may differ in its last bit, as the fused loop's does),
torch's GradScaler bookkeeping is unchanged, and anything the plans do not
serve (no cached buckets yet: unscale_ makes no optimizer state, as torch's
does not; a bucket without a plan; fp16 grads, which torch's unscale_
refuses; a grad held twice; DTensors; plans in both native libraries;
torch.compile) takes the list ops as before. A plan that no longer fits
writes nothing and the call takes the list ops (unscale_, clip) or rebuilds
its buckets (the step).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import _bulk, _native_plan
from .._versions import bump
from ._buckets import Bucket

# The optimizers whose plans hold grads from an unscale_ that no step has
# consumed yet: where clip_grad_norm_ looks for its grads.
_HOLDING: weakref.WeakSet = weakref.WeakSet()
_KEY = "_idiom_binds"  # the record, in the optimizer's __dict__


@dataclass
class IdiomBinds:
    """What an unscale_ through the plans left bound: its buckets (each with a
    plan), in order, and their grads."""

    buckets: list[Bucket]
    grads: list[Tensor]
    by_plan: dict[int, list[Tensor]]  # each plan's grads, by plan id
    ids: set[int] | None = field(default=None)  # id() of every grad, made on a clip's first look

    def holds(self, grads: list[Tensor]) -> bool:
        """Whether ``grads`` are exactly the bound grads, each once (in any order)."""
        if len(grads) != len(self.grads):
            return False
        if _bulk.same(grads, self.grads):
            return True
        if self.ids is None:
            self.ids = set(map(id, self.grads))
        return set(map(id, grads)) == self.ids

    def holds_buckets(self, buckets: list[Bucket]) -> bool:
        """Whether these (a step's pending buckets) are the plans bound, each
        with the grads bound to it."""
        if len(buckets) != len(self.by_plan):
            return False
        for b in buckets:
            held = self.by_plan.get(b.native_plan.id)
            if held is None or not _bulk.same(b.grads, held):
                return False
        return True

    def first_binds(self) -> _native_plan.PendingRechecks:
        return _native_plan.PendingRechecks([b.native_plan for b in self.buckets])


def _reused_buckets(opt, allow_fp16: bool) -> list[Bucket] | None:
    """Every group's cached buckets, reused for this step's grads; None where
    one group has none or cannot reuse them, or a bucket is not one this path
    serves. Never builds buckets: that makes optimizer states, which torch's
    unscale_ does not."""
    groups = opt._reused_buckets()
    if groups is None:
        return None
    out: list[Bucket] = []
    for buckets in groups:
        for b in buckets.values():
            if b.native_plan is None or b.repeat or (not allow_fp16 and b.grads[0].dtype is torch.float16):
                return None
            out.append(b)
    return out


def unscale_(opt, inv_scale: Tensor, found_inf: Tensor, allow_fp16: bool) -> dict[torch.device, Tensor] | None:
    """GradScaler._unscale_grads_ through ``opt``'s plans: the per-device
    found_inf tensors, as the list path returns them; None where the plans do
    not serve this step (nothing written then)."""
    release(opt)
    if torch.compiler.is_compiling() or opt.defaults.get("differentiable") or not _native_plan.ENABLED:
        return None
    buckets = _reused_buckets(opt, allow_fp16)
    if not buckets:
        return None
    grads = buckets[0].grads if len(buckets) == 1 else [g for b in buckets for g in b.grads]
    if len({b.native_plan.library for b in buckets}) != 1 or len(set(map(id, grads))) != len(grads):
        return None  # plans in both libraries, or one grad held twice (the list path unscales it twice)
    found: dict[torch.device, Tensor] = {}
    inv: dict[torch.device, Tensor] = {}
    for b in buckets:
        if b.device not in found:
            found[b.device] = found_inf.to(device=b.device, non_blocking=True, copy=True)
            inv[b.device] = inv_scale.to(device=b.device, non_blocking=True)
    binds = _native_plan.PendingBinds(buckets)
    try:
        with torch.no_grad():
            for i, b in enumerate(buckets):
                b.native_plan.unscale_(found[b.device], inv[b.device], binds=binds if i == 0 else None)
    except _native_plan.Refit:
        return None  # a plan no longer fits: the first op wrote nothing, the list ops unscale
    bump(grads)
    opt.__dict__[_KEY] = IdiomBinds(buckets, grads, {b.native_plan.id: b.grads for b in buckets})
    _HOLDING.add(opt)
    return found


def take(opt) -> IdiomBinds | None:
    """The record of ``opt``'s last unscale_, for its step (which consumes it)."""
    held = opt.__dict__.pop(_KEY, None)
    if held is not None:
        _HOLDING.discard(opt)
    return held


def release(opt) -> None:
    """Lets go of the grads an unscale_ left bound and no step consumed
    (GradScaler.update, a new unscale_)."""
    held = take(opt)
    if held is not None:
        for b in held.buckets:
            b.native_plan.release()


def holding(grads: list[Tensor]):
    """The optimizer and record whose plans hold exactly ``grads`` (a
    clip_grad_norm_'s), or (None, None)."""
    for opt in list(_HOLDING):
        held = opt.__dict__.get(_KEY)
        if held is not None and held.holds(grads):
            return opt, held
    return None, None


def any_holding() -> bool:
    return len(_HOLDING) > 0
