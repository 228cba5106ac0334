"""The step planner: the optimizer's per-group caches of buckets, kept between
eager steps, and what is read from them (reduction groups, backends).

A cache belongs to its group: the planner keeps one per param group, at the
group's index, and a cache whose group is no longer there (a group deleted or
replaced by another dict) is dropped by the next step, with everything it
holds (its buckets' native step plans included; see cache_at and keep).
The optimizer owns its planner (FusedOptimizer._planner); nothing else keeps
buckets between steps.
"""

from __future__ import annotations

import dataclasses
from operator import is_

from torch import Tensor

from .. import _bulk, _collectives, _dtensor, _ops
from ._plan import Bucket, _still_fits

__all__ = ["GroupCache", "StepPlanner"]


class GroupCache:
    """The buckets of one param group, kept between steps (the reuse guard: what
    they were built for, and the check that it still holds).

    Re-bucketing every param every step costs microseconds per param in Python,
    as much as the update itself for small tensors. A cache is reused while the
    group's params, the set of params with grads, the state tensors and the
    grads' dtype/device/layout are what it was built for; anything else
    rebuilds it (and rebuilding re-checks everything before any tensor is
    touched)."""

    def __init__(self, group, signature, params, mask, buckets, reduce_groups, has_dtensor):
        self.group = group  # the dict it describes, compared by identity (see StepPlanner.cache_at)
        self.signature = signature
        self.params = list(params)  # compared by identity (the buckets hold them anyway)
        self.mask = mask
        self.buckets = buckets
        # every param's reduction group, with a grad or not (see _collectives)
        self.reduce_groups = reduce_groups
        self.has_dtensor = has_dtensor

    def reuse(self, signature, params, grads, state, state_same: bool = False) -> dict | None:
        """This step's buckets, or None if the plan no longer fits. ``state_same``:
        the optimizer's state holds the very dicts it held when the last step's
        plans were checked (FusedOptimizer._state_unchanged), so each param's
        state dict need not be looked up again."""
        # The per-tensor checks are whole-list calls (fusedopt/_bulk.py, in C
        # where built): this is the per-step cost of every param, so no Python
        # bytecode runs per tensor here.
        if signature != self.signature or not _bulk.nones_match(grads, self.mask) or not _bulk.same(params, self.params):
            return None
        out = {}
        for key, b in self.buckets.items():
            sel = _bulk.take(grads, b.index)
            if b.sharded:
                sel = _dtensor.local_grads(sel, b.specs)
                if sel is None or not all(map(is_, map(_dtensor.local_of, b.keys), b.params)):
                    return None
            if not state_same and not _bulk.same(map(state.get, b.keys), b.states):
                return None
            if not _bulk.items_are(b.check_dicts, b.check_keys, b.check_tensors):
                return None
            if b.native_plan is not None:
                # every held tensor's dtype, shape and address, and the grads'
                # device, dtype, shape and layout, are checked native-side when
                # the grads are bound: see csrc/step_plan.h
                if not _bulk.all_type(sel, Tensor):
                    return None
            elif not _still_fits(b, sel):
                return None
            out[key] = Bucket(
                b.kind, b.device, b.params, sel, b.lists, keys=b.keys, reduce=b.reduce, written=b.written,
                repeat=b.repeat, native_plan=b.native_plan, masters=b.masters, host_steps=b.host_steps,
                step_versions=b.step_versions,
            )
        # Bound last, once every Python-side check has passed: a plan's bind
        # replaces the grads it held (a refused step leaves none bound).
        for b in out.values():
            if b.native_plan is not None and not b.native_plan.bind(b.grads):
                return None
        return out



class StepPlanner:
    """The caches of one optimizer, one per param group (None where none was built yet)."""

    def __init__(self) -> None:
        self.caches: list[GroupCache | None] = []

    def cache_at(self, index: int) -> GroupCache | None:
        """The cache kept at ``index`` (built for the group at that index then:
        the caller compares ``cache.group`` with the group there now)."""
        return self.caches[index] if index < len(self.caches) else None

    def store(self, index: int, group: dict, signature: tuple, params: list[Tensor], mask: list[bool],
              buckets) -> None:
        dtensors = [p for p in params if _dtensor.is_dtensor(p)]
        reduce_groups = _collectives.ordered_groups(map(_collectives.of_dtensor, dtensors))
        # The cache keeps no grads: each step brings its own, and holding the first
        # step's would keep a whole model's grads alive past zero_grad().
        kept = {key: dataclasses.replace(b, grads=[]) for key, b in buckets.items()}
        cache = GroupCache(group, signature, params, mask, kept, reduce_groups, bool(dtensors))
        self.caches.extend([None] * (index + 1 - len(self.caches)))
        self.caches[index] = cache

    def keep(self, count: int) -> list:
        """Drops the caches past the first ``count`` (groups that were deleted);
        returns the dropped ones."""
        if len(self.caches) <= count:
            return []
        dropped = self.caches[count:]
        del self.caches[count:]
        return dropped

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
