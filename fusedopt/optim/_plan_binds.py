"""Where a step's reused native plans get their grads (fusedopt/_native_plan.py):
with the step's first plan op, which checks every plan before it writes, or
each on its own where that first write is something else."""

from __future__ import annotations

from typing import Callable

from .. import _native_plan, _ops
from ._buckets import Bucket


def bind_reused(work, need_stats: bool, *, masters: bool, ops_for_group: Callable, held=None) -> None:
    """This step's grads for its reused native plans. They go with the op
    that runs first (the first bucket's stats pass or update), which checks
    every plan before it writes anything: a step without a stats pass then
    crosses the dispatcher once per bucket. Where the first write is not
    such an op (a bucket without a plan, masters re-seeded first, plans in
    both native libraries), each plan binds now. Refit: one does not fit.
    ``ops_for_group(ops, group)``: the ops a group's native bucket runs on
    (the optimizer's choice: Adam's tensor betas take the reference).
    ``held``: what an unscale_ of this step left bound (optim/_idiom.py);
    where the pending plans are those, with the same grads, the first op
    re-checks them instead of binding again."""
    pending = [b for _, buckets in work for b in buckets.values() if b.unbound]
    if not pending:
        return
    if _native_plan.FOLD_BINDS and not masters:
        first = first_plan_op(work, need_stats, ops_for_group)
        if first is not None:
            library = first.native_plan.library
            for b in pending:
                if b.native_plan.library != library:
                    break
            else:
                if held is not None and held.holds_buckets(pending):
                    first.binds = held.first_binds()
                else:
                    first.binds = _native_plan.PendingBinds(pending)
                return
    for b in pending:
        if not b.native_plan.bind(b.grads):
            raise _native_plan.Refit


def first_plan_op(work, need_stats: bool, ops_for_group: Callable) -> Bucket | None:
    """The bucket whose plan op is the step's first write, or None where
    the first write is something else."""
    for group, buckets in work:
        for b in buckets.values():
            if need_stats and b.repeat:
                continue  # the stats pass leaves repeats out (see _step_stats.device_amp)
            if b.native_plan is None:
                return None
            if need_stats:
                return b
            # the update goes through the plan (see _apply_bucket)
            return b if ops_for_group(_ops.ops_for(b.device), group) is not _ops.reference else None
    return None
