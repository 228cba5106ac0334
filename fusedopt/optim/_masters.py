"""fp32 master weights that follow their param (``master_weights=True``).

A master is the fp32 value of a float16/bfloat16 param: each step updates the
master and writes its rounding into the param. Anything else that writes the
param (``model.load_state_dict``, ``p.copy_(w)``, an EMA or SWA swap, a DCP
load, ``p.data = w``) leaves the master behind, and the step would overwrite
the new weights with the rounding of the old ones. So every eager step, once
all its checks have passed and before any update, looks at each param with a
master: one that was written by anyone but the step since the step last wrote
it is re-seeded into its master, as a fresh optimizer seeds it, wherever it no
longer equals the master's rounding. Where it does (the same values came back:
an EMA swapped out again, an offload round trip, a checkpoint that restored
param and master together) the master keeps its fp32 precision.

"Written since" is autograd's version counter, which every in-place write
through the dispatcher bumps (the step bumps it after its own kernels, see
fusedopt/_versions.py, and records it after that), or a new data pointer
(``p.data = w`` keeps the counter). The comparison runs on the device, so the
check reads nothing there on the host. Not seen: in-place writes through
``.data`` (``p.data.copy_(w)``: ``.data`` is made to hide writes from autograd),
and compiled steps (dynamo cannot branch on a version counter).

The records live with the cached buckets (the step's copies share them); when
a group's cache is replaced, its records move to a table keyed weakly by master,
where the next cache holding that master finds them.
"""

from __future__ import annotations

from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .._versions import versions as _versions

_data_ptr = Tensor.data_ptr


class MasterTrack:
    """The params of one bucket that have masters, and each param's version
    and data pointer after the last step that wrote it."""

    __slots__ = ("params", "masters", "versions", "ptrs", "planned", "fresh")

    def __init__(self, params: list[Tensor], masters: list[Tensor], versions: list, ptrs: list, planned: bool):
        self.params = params
        self.masters = masters
        self.versions = versions
        self.ptrs = ptrs
        # a native plan re-checks its params' data pointers on every step it
        # binds (csrc/held_lists.h): then only a new plan's first step reads them
        self.planned = planned
        self.fresh = True

    def follow(self) -> None:
        """Re-seeds the masters of params written by others since they were recorded."""
        versions = _versions(self.params)
        ptrs = list(map(_data_ptr, self.params)) if self.fresh or not self.planned else self.ptrs
        self.fresh = False
        if (versions == self.versions and ptrs == self.ptrs) or versions is None or self.versions is None:
            return
        for i, (p, m) in enumerate(zip(self.params, self.masters)):
            if versions[i] != self.versions[i] or ptrs[i] != self.ptrs[i]:
                reseed(p, m)
        self.ptrs = ptrs

    def record(self) -> None:
        self.versions = _versions(self.params)


def reseed(p: Tensor, master: Tensor) -> None:
    """master = p's value, wherever p is not master's rounding (on the device)."""
    p = p.detach()
    master.copy_(master.where(p.eq(master.to(p.dtype)), p.to(master.dtype)))


def _seen(opt) -> WeakIdKeyDictionary:
    """master -> (id of its param, the param's version, its data pointer) as a
    retired cache last recorded them."""
    seen = opt.__dict__.get("_masters_seen")
    if seen is None:
        seen = opt.__dict__["_masters_seen"] = WeakIdKeyDictionary()
    return seen


def track(opt, buckets: dict) -> None:
    """Gives each new bucket with masters its records: a retired cache's, where
    one held the same master for the same param, else the params as they are."""
    if not opt.master_weights:
        return
    seen = _seen(opt)
    for b in buckets.values():
        masters = b.lists.get("masters")
        if not masters:
            continue
        params = b.params
        versions = _versions(params)
        if versions is None:
            continue  # inference tensors: nothing outside inference mode writes them
        ptrs = list(map(_data_ptr, params))
        for i, m in enumerate(masters):
            was = seen.get(m)
            if was is not None and was[0] == id(params[i]):
                versions[i], ptrs[i] = was[1], was[2]
        b.masters = MasterTrack(params, masters, versions, ptrs, planned=b.native_plan is not None)


def retire(opt, caches: list) -> None:
    """Keeps the records of group caches that are being replaced or dropped."""
    tracks = [
        b.masters for cache in caches if cache is not None for b in cache.buckets.values() if b.masters is not None
    ]
    if not tracks:
        return
    seen = _seen(opt)
    for t in tracks:
        if t.versions is None:
            continue
        for p, m, version, ptr in zip(t.params, t.masters, t.versions, t.ptrs):
            seen[m] = (id(p), version, ptr)


def follow(work) -> None:
    """Before the step's first write: see MasterTrack.follow."""
    for _, buckets in work:
        for b in buckets.values():
            if b.masters is not None:
                b.masters.follow()


def record(work) -> None:
    """After the step's last write (and its version bumps)."""
    for _, buckets in work:
        for b in buckets.values():
            if b.masters is not None:
                b.masters.record()
