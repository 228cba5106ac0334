"""The step plan: which tensors each kernel call of a step takes (buckets), and
the checks that let a later step reuse them.

A param group's params are routed into buckets (one device, one dtype per
list, one kernel call each) when its plan is built; later steps reuse the
plan while everything it was built for still holds (see GroupPlan.reuse), and
rebuild it otherwise. Building re-checks everything before any tensor is
touched.

A plan belongs to its group: the optimizer keeps one per param group, at the
group's index, and a plan whose group is no longer there (a group deleted or
replaced by another dict) is dropped by the next step, with everything it
holds (see plan_at and keep_plans).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter, is_
from typing import Any

import torch
from torch import Tensor

from .. import _bulk, _collectives, _dtensor
from .._versions import versions
from . import _validate

NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)


@dataclass
class Bucket:
    """Tensors one kernel call updates: one device, one dtype per list.

    ``kind`` is "native" (the device's kernels), "reference" (plain torch, for
    tensors the kernels do not take), "sparse" (SGD's sparse grads) or "torch"
    (SGD's grads of another dtype than their param's: torch's own SGD)."""

    kind: str
    device: torch.device
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    lists: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))
    # for re-using the bucket on later steps (see GroupPlan)
    index: list[int] = field(default_factory=list)
    grad_dtype: torch.dtype | None = None
    param_dtype: torch.dtype | None = None
    layout: str | None = None
    # each param's state dict as it was: a reset state (state.clear(), del
    # state[p], a new opt.state) must rebuild the plan
    states: list[dict | None] = field(default_factory=list)
    # the state tensors the lists hold, and the (state dict, key) each came from
    check_dicts: list[dict] = field(default_factory=list)
    check_keys: list[str] = field(default_factory=list)
    check_tensors: list[Tensor] = field(default_factory=list)
    # the params as self.state keys: ``params`` itself, except for DTensor params,
    # whose ``params``/``grads``/``lists`` hold the local shards the kernels take
    keys: list[Tensor] = field(default_factory=list)
    sharded: bool = False
    specs: list = field(default_factory=list)  # DTensor grads' specs at build, checked on reuse
    # the ranks the bucket's grads' sum of squares is summed over (see _collectives)
    reduce: Any = None
    # what the plan was built for, re-checked on reuse: the params' shapes (p.data
    # can be replaced), and the grads' dtypes of a non-native bucket
    shapes: list[torch.Size] = field(default_factory=list)
    grad_dtypes: list[torch.dtype] = field(default_factory=list)
    # every tensor the native kernels write: their autograd versions are bumped
    written: list[Tensor] = field(default_factory=list)
    # a second (third...) occurrence of params listed twice in the group: run
    # after the first, and left out of the global norm (see _repeats.py)
    repeat: bool = False
    # a native bucket's plan in the CPU library (fusedopt/_native_plan.py), made
    # with the bucket; a step's copy of the bucket carries it once it is bound
    native_plan: Any = None
    # what a bucket without a native plan re-checks on reuse (see _still_fits):
    # each held list (params first) with its tensors' dtypes, shapes and devices
    # at build, and which lists must keep the params' layout
    held: list = field(default_factory=list)
    # a CPU bucket's step counters and (in a one-element list shared with the
    # step's copies) their autograd versions after the last step: one written
    # since by anyone else may now be -1, which a rebuild refuses as torch does
    # (see _validate.check_step_count)
    host_steps: list | None = None
    step_versions: list | None = None
    # the params with fp32 masters and what each looked like after the last step
    # that wrote it (fusedopt/optim/_masters.py); shared with the step's copies
    masters: Any = None

    @property
    def native(self) -> bool:
        return self.kind == "native"


@dataclass
class Route:
    """Where one param goes this step, and the tensors its bucket lists take."""

    key: tuple
    kind: str
    tensors: dict[str, Tensor]
    # (state dict, key) pairs the tensors were read from, checked on reuse
    sources: list[tuple[dict, str]]


class GroupPlan:
    """The buckets of one param group, kept between steps.

    Re-bucketing every param every step costs microseconds per param in Python,
    as much as the update itself for small tensors. A plan is reused while the
    group's params, the set of params with grads, the state tensors and the
    grads' dtype/device/layout are what it was built for; anything else
    rebuilds it (and rebuilding re-checks everything before any tensor is
    touched)."""

    def __init__(self, group, signature, params, mask, buckets, reduce_groups, has_dtensor):
        self.group = group  # the dict it describes, compared by identity (see plan_at)
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


_get_device = Tensor.get_device
_dtype_of = attrgetter("dtype")
_is_sparse = attrgetter("is_sparse")
_shape_of = attrgetter("shape")


def _kinds(ts: list[Tensor]) -> tuple[list, list, list]:
    """The dtypes, shapes and devices of a held list, as a bucket without a
    native plan records and re-checks them."""
    return list(map(_dtype_of, ts)), list(map(_shape_of, ts)), list(map(_get_device, ts))


def _still_fits(b: Bucket, grads: list[Tensor]) -> bool:
    """Whether a bucket without a native plan still takes this step's grads and
    what it holds: the Python twin of csrc/step_plan.h's re-check, for the list
    ops and the reference path, which fail (or compute something else) on a
    tensor whose dtype, shape, device or layout changed under ``.data``. A list
    op that refused mid-step would leave earlier buckets updated."""
    if list(map(_dtype_of, grads)) != b.grad_dtypes or list(map(_shape_of, grads)) != b.shapes:
        return False
    if b.kind == "native":
        laid_out = _LAYOUT_CHECKS[b.layout]
        if not (_bulk.all_type(grads, Tensor) and all(map(laid_out, grads))):
            return False
        if list(map(_get_device, grads)) != b.held[0][1][2]:
            return False
    elif not all(map(is_, map(_is_sparse, grads), repeat(b.kind == "sparse"))):
        return False
    for ts, kinds, keeps_layout in b.held:
        if _kinds(ts) != kinds or (keeps_layout and not all(map(_LAYOUT_CHECKS[b.layout], ts))):
            return False
    return b.host_steps is None or versions(b.host_steps) == b.step_versions[0]


def record_steps(work) -> None:
    """After a step's last write: the versions its buckets' host step counters
    have now (see Bucket.step_versions)."""
    for _, buckets in work:
        for b in buckets.values():
            if b.step_versions is not None:
                b.step_versions[0] = versions(b.host_steps)


# Memory layouts the kernels take: any in which a tensor's elements fill numel
# consecutive slots, shared by a param and all its companions (the kernels see
# flat arrays). Each has a cheap check that the step plan repeats every step.
_LAYOUT_CHECKS = {
    "contiguous": Tensor.is_contiguous,
    "channels_last": partial(Tensor.is_contiguous, memory_format=torch.channels_last),
    "channels_last_3d": partial(Tensor.is_contiguous, memory_format=torch.channels_last_3d),
}


def layout_of(t: Tensor) -> str | None:
    if t.is_contiguous():
        return "contiguous"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    return None


def native_eligible(p: Tensor, g: Tensor, states: tuple[Tensor, ...]) -> bool:
    """Whether the native kernels can take this param (else: the reference path).
    A DTensor param is judged by its local shards (see fusedopt/_dtensor.py)."""
    if _dtensor.is_dtensor(p):
        p, g, states = p._local_tensor, _dtensor.local(g), tuple(map(_dtensor.local, states))
    if type(p) not in _PLAIN_TENSOR_TYPES or type(g) is not Tensor:
        return False  # other tensor subclasses dispatch their own ops
    if p.dtype not in NATIVE_DTYPES or (g.dtype is not p.dtype and g.dtype is not torch.float32):
        return False
    layout = layout_of(p)
    if layout is None or layout_of(g) != layout:
        return False
    first = states[0].dtype if states else None
    for s in states:
        if s.dtype is not first or type(s) is not Tensor or layout_of(s) != layout:
            return False
    return first is None or first in NATIVE_DTYPES


def build_buckets(opt, group: dict, params: list[Tensor], grads: list[Tensor | None]) -> dict[tuple, Bucket]:
    """Checks and routes every param with a grad (creating its state if
    needed) into the buckets of one group."""
    buckets = {}
    norm = _collectives.of_norm_group(opt.norm_group)
    occurrences: dict[int, int] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        opt._check_grad_device(p, g)
        _validate.check_not_inference(p)  # before its state is made
        sharded = _dtensor.check_grad(p, g)
        # a param listed twice: its later occurrences go to buckets of their own
        occurrence = occurrences.get(id(p), 0)
        occurrences[id(p)] = occurrence + 1
        r = opt._route(p, g, group, occurrence)
        reduce = _collectives.of_dtensor(p) if sharded else norm
        key = r.key + (reduce, sharded) + (("repeat", occurrence) if occurrence else ())
        lp, lg = (p._local_tensor, g._local_tensor) if sharded else (p, g)
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = Bucket(
                r.kind, lp.device, grad_dtype=lg.dtype, param_dtype=lp.dtype, layout=layout_of(lp),
                sharded=sharded, reduce=reduce, repeat=occurrence > 0,
            )
        b.keys.append(p)
        b.params.append(lp)
        b.states.append(opt.state.get(p))
        b.grads.append(lg)
        b.index.append(i)
        b.shapes.append(lp.shape)
        b.grad_dtypes.append(lg.dtype)
        # a DTensor's version counter is not its shard's: both are written
        b.written.extend((p, lp) if sharded else (p,))
        if sharded:
            b.specs.append(g._spec)
        for name, t in r.tensors.items():
            local = _dtensor.local_state(p, t, name) if sharded else t
            b.lists[name].append(local)
            b.written.extend((t, local) if sharded else (t,))
        for st, k in r.sources:
            b.check_dicts.append(st)
            b.check_keys.append(k)
            b.check_tensors.append(st[k])
    return buckets


def record_held(b: Bucket) -> None:
    """What a bucket without a native plan re-checks on its reuse (_still_fits)."""
    if b.native_plan is not None:
        return
    lists = [b.params] + list(b.lists.values())
    # lists of per-element tensors (the params' shapes) keep the params' layout;
    # step counters and flags are scalars
    b.held = [(ts, _kinds(ts), b.kind == "native" and list(map(_shape_of, ts)) == b.shapes) for ts in lists]
    steps = b.lists.get("steps")
    if steps and b.device.type == "cpu":
        b.host_steps, b.step_versions = steps, [versions(steps)]


def plans_of(opt) -> list:
    """The optimizer's plans: one per param group, at the group's index (None
    where none was built yet)."""
    plans = opt.__dict__.get("_plans")
    if plans is None:
        plans = opt.__dict__["_plans"] = []
    return plans


def plan_at(opt, index: int):
    """The plan kept at ``index`` (built for the group at that index then: the
    caller compares ``plan.group`` with the group there now)."""
    plans = plans_of(opt)
    return plans[index] if index < len(plans) else None


def store_plan(opt, index: int, group: dict, signature: tuple, params: list[Tensor], mask: list[bool], buckets) -> None:
    dtensors = [p for p in params if _dtensor.is_dtensor(p)]
    reduce_groups = _collectives.ordered_groups(map(_collectives.of_dtensor, dtensors))
    # The plan keeps no grads: each step brings its own, and holding the first
    # step's would keep a whole model's grads alive past zero_grad().
    kept = {key: dataclasses.replace(b, grads=[]) for key, b in buckets.items()}
    plan = GroupPlan(group, signature, params, mask, kept, reduce_groups, bool(dtensors))
    plans = plans_of(opt)
    plans.extend([None] * (index + 1 - len(plans)))
    plans[index] = plan


def keep_plans(opt, count: int) -> list:
    """Drops the plans past the first ``count`` (groups that were deleted);
    returns the dropped ones."""
    plans = plans_of(opt)
    if len(plans) <= count:
        return []
    dropped = plans[count:]
    del plans[count:]
    return dropped
