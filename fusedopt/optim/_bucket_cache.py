"""The bucket cache: the optimizer's per-group caches of buckets, kept between
eager steps, and what is read from them (reduction groups, backends).

A cache belongs to its group: the bucket cache keeps one per param group, at the
group's index, and a cache whose group is no longer there (a group deleted or
replaced by another dict) is dropped by the next step, with everything it
holds (its buckets' native plans included; see cache_at and keep).
The optimizer owns its bucket cache (FusedOptimizer._bucket_cache); nothing else keeps
buckets between steps.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from .. import _bulk, _collectives, _dtensor, _ops
from ._buckets import Bucket

__all__ = ["GroupCache", "BucketCache"]


class GroupCache:
    """The buckets of one param group, kept between steps, each with its reuse
    guard (what it was built for, and the check that it still holds).

    Re-bucketing every param every step costs microseconds per param in Python,
    as much as the update itself for small tensors. A cache is reused while the
    group's params, the set of params with grads, the state tensors and the
    grads' dtype/device/layout are what it was built for; anything else
    rebuilds it (and rebuilding re-checks everything before any tensor is
    touched)."""

    def __init__(self, group, signature, params, mask, buckets, guards, reduce_groups, has_dtensor):
        self.group = group  # the dict it describes, compared by identity (see BucketCache.cache_at)
        self.signature = signature
        self.params = list(params)  # compared by identity (the buckets hold them anyway)
        self.mask = mask
        self.buckets = buckets  # the work items, without grads
        self.guards = guards  # their reuse guards, under the same keys
        # every param's reduction group, with a grad or not (see _collectives)
        self.reduce_groups = reduce_groups
        self.has_dtensor = has_dtensor

    def reuse(self, signature, params, grads, state, state_same: bool = False) -> dict | None:
        """This step's buckets, or None if the cache no longer fits. ``state_same``:
        see ReuseGuard.grads_for."""
        if signature != self.signature or not _bulk.nones_match(grads, self.mask) or not _bulk.same(params, self.params):
            return None
        out = {}
        guards = self.guards
        for key, b in self.buckets.items():
            sel = guards[key].grads_for(b, grads, state, state_same)
            if sel is None:
                return None
            # a native plan binds these grads with the step's first op (see
            # _plan_binds.bind_reused), which also makes its checks
            out[key] = Bucket(
                b.kind, b.device, b.params, sel, b.lists, b.keys, b.reduce, b.written, b.repeat, b.native_plan,
                b.masters, b.native_plan is not None,
            )
        return out

    def record_steps(self) -> None:
        """After a step's last write (see ReuseGuard.record_steps)."""
        for guard in self.guards.values():
            guard.record_steps()


class BucketCache:
    """The caches of one optimizer, one per param group (None where none was built yet)."""

    def __init__(self) -> None:
        self.caches: list[GroupCache | None] = []
        # the optimizer's state dict, its keys and its per-param dicts, as the
        # last eager step's bucketing left them (see state_unchanged)
        self.state_snapshot: tuple | None = None

    def state_unchanged(self, state: dict) -> bool:
        """Whether ``state`` holds exactly the per-param dicts (same keys, same
        dict objects, in order) it held at the last snapshot_state. Iterating
        a dict hashes nothing, where looking each param up calls
        Tensor.__hash__, a Python function, once per param."""
        snap = self.state_snapshot
        return (
            snap is not None
            and snap[0] is state
            and len(state) == len(snap[1])
            and _bulk.same(state.keys(), snap[1])
            and _bulk.same(state.values(), snap[2])
        )

    def snapshot_state(self, state: dict) -> None:
        self.state_snapshot = (state, list(state.keys()), list(state.values()))

    def snapshot_len(self) -> int:
        """How many params had state at the last snapshot_state (-1: none taken)."""
        return -1 if self.state_snapshot is None else len(self.state_snapshot[1])

    def cache_at(self, index: int) -> GroupCache | None:
        """The cache kept at ``index`` (built for the group at that index then:
        the caller compares ``cache.group`` with the group there now)."""
        return self.caches[index] if index < len(self.caches) else None

    def store(self, index: int, group: dict, signature: tuple, params: list[Tensor], mask: list[bool],
              buckets, guards) -> None:
        dtensors = [p for p in params if _dtensor.is_dtensor(p)]
        reduce_groups = _collectives.ordered_groups(map(_collectives.of_dtensor, dtensors))
        # The cache keeps no grads: each step brings its own, and holding the first
        # step's would keep a whole model's grads alive past zero_grad().
        kept = {key: dataclasses.replace(b, grads=[]) for key, b in buckets.items()}
        cache = GroupCache(group, signature, params, mask, kept, guards, reduce_groups, bool(dtensors))
        self.caches.extend([None] * (index + 1 - len(self.caches)))
        self.caches[index] = cache

    def reuse_all(self, groups: list[dict], signature_of, state, state_same: bool) -> list[dict] | None:
        """Every group's buckets, reused for the grads its params hold now, in
        group order; None where a group has no cache or its cache does not fit
        them. Builds nothing, so makes no optimizer state."""
        if len(self.caches) != len(groups):
            return None
        out = []
        for cache, group in zip(self.caches, groups):
            if cache is None or cache.group is not group:
                return None
            params = group["params"]
            if type(params) is not list:
                params = list(params)
            buckets = cache.reuse(signature_of(group), params, _bulk.attrs(params, "grad"), state, state_same)
            if buckets is None:
                return None
            out.append(buckets)
        return out

    def keep(self, count: int) -> list:
        """Drops the caches past the first ``count`` (groups that were deleted);
        returns the dropped ones."""
        if len(self.caches) <= count:
            return []
        dropped = self.caches[count:]
        del self.caches[count:]
        return dropped

    def record_steps(self) -> None:
        """After an eager step's last write: every cached guard records its host
        step counters' versions (the step's buckets are the cached ones)."""
        for cache in self.caches:
            if cache is not None:
                cache.record_steps()

    def reduce_groups(self) -> list:
        """Every cached param's reduction group (see fusedopt/_collectives.py)."""
        return [rg for cache in self.caches if cache is not None for rg in cache.reduce_groups]

    def has_dtensor(self) -> bool:
        return any(cache.has_dtensor for cache in self.caches if cache is not None)

    def backends(self) -> dict[str, int]:
        """How many params each backend updated in the last step, read from the caches."""
        counts: dict[str, int] = {}
        for cache in self.caches:
            for b in cache.buckets.values() if cache is not None else ():
                name = _ops.backend(b.device) if b.native else b.kind
                counts[name] = counts.get(name, 0) + len(b.params)
        return counts
