"""The step plan: which tensors each kernel call of a step takes (buckets), and
the checks that let a later step reuse them.

A param group's params are routed into buckets (one device, one dtype per
list, one kernel call each) when its plan is built; later steps reuse the
plan while everything it was built for still holds (see GroupPlan.reuse), and
rebuild it otherwise. Building re-checks everything before any tensor is
touched.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter, eq, is_
from typing import Any

import torch
from torch import Tensor

from .. import _bulk, _collectives, _dtensor

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

    def __init__(self, signature, params, mask, buckets, reduce_groups, has_dtensor):
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
            dev = -1 if b.device.type == "cpu" else b.device.index
            if b.native_plan is None and not all(map(eq, map(_get_device, sel), repeat(dev))):
                return None
            if not state_same and not _bulk.same(map(state.get, b.keys), b.states):
                return None
            if b.native_plan is not None:
                # the grads' device, dtype and layout, and the params' (p.data can
                # be replaced), checked native-side: see csrc/step_plan.h
                if not _bulk.all_type(sel, Tensor):
                    return None
            elif b.kind == "native":
                laid_out = _LAYOUT_CHECKS[b.layout]
                if not (
                    _bulk.all_type(sel, Tensor)
                    and all(map(is_, map(_dtype_of, sel), repeat(b.grad_dtype)))
                    and all(map(laid_out, sel))
                    # the params themselves (p.data can be replaced)
                    and all(map(is_, map(_dtype_of, b.params), repeat(b.param_dtype)))
                    and all(map(eq, map(_get_device, b.params), repeat(dev)))
                    and all(map(laid_out, b.params))
                ):
                    return None
            elif not (
                all(map(is_, map(_is_sparse, sel), repeat(b.kind == "sparse")))
                and list(map(_dtype_of, sel)) == b.grad_dtypes
            ):
                return None
            if not _bulk.items_are(b.check_dicts, b.check_keys, b.check_tensors):
                return None
            if b.native_plan is None and list(map(_shape_of, b.params)) != b.shapes:
                return None
            out[key] = Bucket(
                b.kind, b.device, b.params, sel, b.lists, keys=b.keys, reduce=b.reduce, written=b.written,
                repeat=b.repeat, native_plan=b.native_plan,
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


def store_plan(opt, group: dict, signature: tuple, params: list[Tensor], mask: list[bool], buckets) -> None:
    dtensors = [p for p in params if _dtensor.is_dtensor(p)]
    reduce_groups = _collectives.ordered_groups(map(_collectives.of_dtensor, dtensors))
    # The plan keeps no grads: each step brings its own, and holding the first
    # step's would keep a whole model's grads alive past zero_grad().
    kept = {key: dataclasses.replace(b, grads=[]) for key, b in buckets.items()}
    plan = GroupPlan(signature, params, mask, kept, reduce_groups, bool(dtensors))
    opt.__dict__.setdefault("_plans", {})[id(group)] = (group, plan)
