"""The step's buckets of each param group (_buckets.py), with their native plans:
built, kept between eager steps and reused (_bucket_cache.py), or built for a
compiled step's trace by _init_group, which torch.compile calls by name as it
does torch's optimizers' (see _compile.py)."""

from __future__ import annotations

from itertools import repeat
from operator import is_not

import torch
from torch import Tensor

from .. import _bulk, _collectives, _dtensor, _native_plan
from . import _buckets, _compile, _masters, _stochastic_rounding
from ._buckets import Bucket, call_lists


class BucketingMixin:
    """FusedOptimizer's bucketing. Needs of its host: rule, _route, _hyper,
    _is_8bit, _bucket_cache, state, param_groups and the fusedopt options."""

    def _bucket_signature(self, group: dict) -> tuple:
        """Group settings that change the buckets (not lr and the like), and
        inference mode, in which tensors made inside it may be written."""
        return (
            self.master_weights, self.state_dtype, self.max_grad_norm is None, self.norm_group,
            torch.is_inference_mode_enabled(), self.rule.active(group), self.min_8bit_size, self.stochastic_rounding,
        )

    def _native_plan_for(self, bucket: Bucket, group: dict):
        """A native plan of the bucket's lists (fusedopt/_native_plan.py)."""
        states, counters, masters = call_lists(bucket)
        keys = bucket.lists.get("rounding_keys")
        offsets = [_stochastic_rounding.global_offset(p) for p in bucket.keys] if keys else None
        return _native_plan.make(self.rule.name, bucket.params, bucket.grads, states, counters, masters,
                                 self._hyper(group, native=True), keys, offsets)

    def _state_unchanged(self) -> bool:
        return self._bucket_cache.state_unchanged(self.state)

    def _snapshot_state(self) -> None:
        self._bucket_cache.snapshot_state(self.state)
        self._state_changed()

    def _state_changed(self) -> None:
        """Subclass hook: self.state changed since the last step (a param's state
        popped, say): let go of what is kept beside it for params it no longer has."""

    def _bucket_group(self, group: dict, state_same: bool = False, index: int | None = None) -> dict[tuple, Bucket]:
        params = group["params"]
        if type(params) is not list:
            params = list(params)  # the whole-list checks take lists
        # .grad of a tensor subclass (DTensor) goes through torch-function
        # handling, ~10x the cost of a plain attribute read
        with torch._C.DisableTorchFunctionSubclass():
            grads = _bulk.attrs(params, "grad")
        signature = self._bucket_signature(group)
        if index is None:
            index = _index_of(self.param_groups, group)
        cache = self._bucket_cache.cache_at(index)
        if cache is not None and cache.group is group:
            buckets = cache.reuse(signature, params, grads, self.state, state_same)
            if buckets is not None:
                return buckets
        # what the old cache's masters last looked like, for the new one to compare
        _masters.retire(self, [cache])
        buckets, guards = _buckets.build_buckets(
            self._route, self.state, _collectives.of_norm_group(self.norm_group), group, params, grads
        )
        for key, b in buckets.items():
            if b.native and _native_plan.available(b.device):
                b.native_plan = self._native_plan_for(b, group)  # validates, binds these grads
            guards[key].record(b)
        _masters.track(self, buckets)
        mask = list(map(is_not, grads, repeat(None)))
        self._bucket_cache.store(index, group, signature, params, mask, buckets, guards)
        return buckets

    def _traced_buckets(self, group: dict) -> tuple[dict[tuple, Bucket], list] | None:
        """A compiled step's buckets of ``group`` and the traced forms of the
        group's reduction groups (see _collectives.traced), or None where the
        step must run eagerly (see _init_group)."""
        # dynamo runs _init_group eagerly and guards what it returns (see _compile.py)
        flat: list[Tensor] = []
        layout = self._init_group(group, flat)
        if layout is None:
            return None
        buckets, reduce_groups = layout
        return _compile.unflatten(
            buckets, flat, lambda kind, device, params, grads, lists, keys, reduce: Bucket(
                kind, device, params, grads, lists, keys=keys, reduce=reduce)
        ), reduce_groups

    def _init_group(self, group: dict, flat: list[Tensor]) -> tuple | None:
        """The compiled step's bucketing: torch.compile calls this eagerly, by
        name, as it does torch's optimizers' _init_group (see _compile.py). It
        stores the group's buckets as the eager step does (the reduction groups and
        step_backends() read it), and returns the constant layout of the tensors
        it appended to ``flat`` with the traced forms of the reduction groups
        this rank joins for the group (the plain params' norm group first, then
        its DTensor params' mesh groups, as in _reduce_groups). None: the group
        has DTensor params whose states the compiled route does not take (8-bit
        states, stochastic rounding keyed by a shard's global offset), and the
        step then runs eagerly."""
        params = group["params"]
        dtensors = [p for p in params if _dtensor.is_dtensor(p)]
        if dtensors and (self.stochastic_rounding or any(map(self._is_8bit, dtensors))):
            return None
        grads = [p.grad for p in params]
        buckets, guards = _buckets.build_buckets(
            self._route, self.state, _collectives.of_norm_group(self.norm_group), group, params, grads
        )
        for key, b in buckets.items():
            # what an eager step that reuses this cache re-checks (ReuseGuard.grads_for)
            guards[key].record(b)
        mask = list(map(is_not, grads, repeat(None)))
        index = _index_of(self.param_groups, group)
        self._bucket_cache.store(index, group, self._bucket_signature(group), params, mask, buckets, guards)
        if self.max_grad_norm is not None and self.norm_group is None and not any(
            _dtensor.is_dtensor(p) for g in self.param_groups for p in g["params"]
        ):
            # what the eager step says in _reduce_groups; said here because this
            # runs eagerly, once per trace (a warning in the graph would break it)
            _collectives.warn_local_norm_once(self)
        norm = _collectives.of_norm_group(self.norm_group)
        reduce_groups = [norm] + _collectives.ordered_groups(map(_collectives.of_dtensor, dtensors))
        return _compile.flatten(buckets, flat, self.state), tuple(map(_collectives.traced, reduce_groups))

    def _reused_buckets(self) -> list[dict] | None:
        """Each group's cached buckets, reused for this step's grads (None where
        one is missing or does not fit; builds nothing): for the work before a
        step that goes through its plans (optim/_idiom.py)."""
        cache = self._bucket_cache
        if cache.has_dtensor():
            return None
        return cache.reuse_all(self.param_groups, self._bucket_signature, self.state, self._state_unchanged())

    def _forget_buckets(self) -> None:
        _masters.retire(self, self._bucket_cache.keep(0))


def _index_of(groups: list[dict], group: dict) -> int:
    """The index of ``group`` in ``groups``, by identity (dicts compare by value)."""
    for i, g in enumerate(groups):
        if g is group:
            return i
    raise ValueError("fusedopt: this param group is not one of the optimizer's param_groups")
