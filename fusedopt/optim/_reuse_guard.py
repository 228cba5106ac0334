"""The reuse guard of a bucket: what a bucket was built for, captured when it
is built, and the check that a later step's params, grads and states still
fit it (the cache that keeps buckets between steps: _bucket_cache.py).

A bucket (the work item, _buckets.Bucket) says what a kernel call takes; its
guard says whether the next step may take the same bucket again instead of
re-routing every param. A bucket with a native plan leaves the tensors'
dtypes, shapes, addresses and layouts to the plan's bind (csrc/held_lists.h),
which checks them again on every step anyway; the guard then checks only what
the native side cannot see: which tensor objects the state dicts and the
group hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter, is_
from typing import Any

import torch
from torch import Tensor

from .. import _bulk, _dtensor
from .._versions import versions

_get_device = Tensor.get_device
_dtype_of = attrgetter("dtype")
_is_sparse = attrgetter("is_sparse")
_shape_of = attrgetter("shape")

# Memory layouts the kernels take: any in which a tensor's elements fill numel
# consecutive slots, shared by a param and all its companions (the kernels see
# flat arrays). Each has a cheap check that a reused bucket repeats every step.
LAYOUT_CHECKS = {
    "contiguous": Tensor.is_contiguous,
    "channels_last": partial(Tensor.is_contiguous, memory_format=torch.channels_last),
    "channels_last_3d": partial(Tensor.is_contiguous, memory_format=torch.channels_last_3d),
}


@dataclass
class ReuseGuard:
    """What one bucket was built for, re-checked when a later step reuses it."""

    kind: str
    layout: str | None
    sharded: bool
    # the bucket's params' positions in the group's params (and so its grads')
    index: list[int] = field(default_factory=list)
    # each param's state dict as it was: a reset state (state.clear(), del
    # state[p], a new opt.state) must rebuild the bucket
    states: list[dict | None] = field(default_factory=list)
    # the state tensors the bucket's lists hold, and the (state dict, key) each came from
    check_dicts: list[dict] = field(default_factory=list)
    check_keys: list[str] = field(default_factory=list)
    check_tensors: list[Tensor] = field(default_factory=list)
    specs: list = field(default_factory=list)  # DTensor grads' specs
    # the params' shapes (p.data can be replaced) and the grads' dtypes
    shapes: list[torch.Size] = field(default_factory=list)
    grad_dtypes: list[torch.dtype] = field(default_factory=list)
    # a bucket without a native plan: each list it holds (params first) with
    # its tensors' dtypes, shapes and devices, and whether the list must keep
    # the params' layout (see record)
    held: list = field(default_factory=list)
    # a CPU bucket's float32 step counters and their autograd versions after
    # the last step: one written since by anyone else may now be -1, which a
    # rebuild refuses as torch does (see _validate.check_step_count)
    host_steps: list | None = None
    step_versions: Any = None

    def grads_for(self, b, grads: list, state: dict, state_same: bool) -> list | None:
        """The bucket's grads of this step (``grads``: the group's), or None if
        ``b`` no longer fits them or what it holds. ``state_same``: the
        optimizer's state holds the very dicts it held when the last step's
        buckets were checked, so each param's state dict need not be looked
        up again."""
        # whole-list calls (fusedopt/_bulk.py, in C where built): no Python
        # bytecode runs per tensor here
        sel = _bulk.take(grads, self.index)
        if self.sharded:
            sel = _dtensor.local_grads(sel, self.specs)
            if sel is None or not all(map(is_, map(_dtensor.local_of, b.keys), b.params)):
                return None
        if not state_same and not _bulk.same(map(state.get, b.keys), self.states):
            return None
        if not _bulk.items_are(self.check_dicts, self.check_keys, self.check_tensors):
            return None
        if b.native_plan is not None:
            # the rest is the plan's bind (csrc/held_lists.h), which sees the
            # tensors only once they are in a list of plain tensors
            return sel if _bulk.all_type(sel, Tensor) else None
        return sel if self._still_fits(sel) else None

    def _still_fits(self, grads: list[Tensor]) -> bool:
        """Whether a bucket without a native plan still takes these grads and
        what it holds: the Python twin of csrc/held_lists.h's re-check, for the
        list ops and the reference path, which fail (or compute something
        else) on a tensor whose dtype, shape, device or layout changed under
        ``.data``. A list op that refused mid-step would leave earlier buckets
        updated."""
        if list(map(_dtype_of, grads)) != self.grad_dtypes or list(map(_shape_of, grads)) != self.shapes:
            return False
        if self.kind == "native":
            laid_out = LAYOUT_CHECKS[self.layout]
            if not (_bulk.all_type(grads, Tensor) and all(map(laid_out, grads))):
                return False
            if list(map(_get_device, grads)) != self.held[0][1][2]:
                return False
        elif not all(map(is_, map(_is_sparse, grads), repeat(self.kind == "sparse"))):
            return False
        for ts, kinds, keeps_layout in self.held:
            if _kinds(ts) != kinds or (keeps_layout and not all(map(LAYOUT_CHECKS[self.layout], ts))):
                return False
        return self.host_steps is None or versions(self.host_steps) == self.step_versions

    def record(self, b) -> None:
        """What a bucket without a native plan re-checks on reuse (_still_fits),
        once its lists are complete."""
        if b.native_plan is not None:
            return
        lists = [b.params] + list(b.lists.values())
        # lists of per-element tensors (the params' shapes) keep the params' layout;
        # step counters and flags are scalars
        native = self.kind == "native"
        self.held = [(ts, _kinds(ts), native and list(map(_shape_of, ts)) == self.shapes) for ts in lists]
        steps = b.lists.get("counters")
        if steps and b.device.type == "cpu" and steps[0].dtype is torch.float32:
            self.host_steps, self.step_versions = steps, versions(steps)

    def record_steps(self) -> None:
        """After a step's last write: the versions its host step counters have now."""
        if self.host_steps is not None:
            self.step_versions = versions(self.host_steps)


def _kinds(ts: list[Tensor]) -> tuple[list, list, list]:
    """The dtypes, shapes and devices of a held list, as a guard records and re-checks them."""
    return list(map(_dtype_of, ts)), list(map(_shape_of, ts)), list(map(_get_device, ts))
