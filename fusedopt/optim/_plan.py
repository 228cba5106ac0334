"""The work items of a step: which tensors each kernel call takes (buckets),
how a param is routed into one, and what a bucket without a native step plan
re-checks when a later step reuses it (the group caches that keep buckets
between steps: _planner.py).

A param group's params are routed into buckets (one device, one dtype per
list, one kernel call each); building re-checks everything before any tensor
is touched.
"""

from __future__ import annotations

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
    # for re-using the bucket on later steps (see _planner.GroupCache)
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
    # the tensors already local to this rank (a DTensor param's 8-bit states)
    local_names: frozenset = frozenset()


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


def call_lists(b: Bucket) -> tuple[list, list, list]:
    """A bucket's lists as a rule's op takes them after params and grads: the
    active states concatenated, the counters, the masters."""
    lists = b.lists
    states = []
    k = 0
    while f"state{k}" in lists:
        states += lists[f"state{k}"]
        k += 1
    return states, lists["counters"], lists["masters"]


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


def check_grad_device(p: Tensor, g: Tensor) -> None:
    if g.device != p.device:
        raise RuntimeError(
            f"fusedopt: a parameter on {p.device} has its grad on {g.device}; "
            "grads must live on their parameter's device"
        )


def build_buckets(route, state: dict, norm, group: dict, params: list[Tensor],
                  grads: list[Tensor | None]) -> dict[tuple, Bucket]:
    """Checks and routes every param with a grad into the buckets of one group:
    ``route(p, g, group, occurrence)`` (the optimizer's: it creates p's state if
    needed) says where each goes; ``state`` is the optimizer's; ``norm`` the
    reduction group of plain params' norm."""
    buckets = {}
    occurrences: dict[int, int] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        check_grad_device(p, g)
        _validate.check_not_inference(p)  # before its state is made
        sharded = _dtensor.check_grad(p, g)
        # a param listed twice: its later occurrences go to buckets of their own
        occurrence = occurrences.get(id(p), 0)
        occurrences[id(p)] = occurrence + 1
        r = route(p, g, group, occurrence)
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
        b.states.append(state.get(p))
        b.grads.append(lg)
        b.index.append(i)
        b.shapes.append(lp.shape)
        b.grad_dtypes.append(lg.dtype)
        # a DTensor's version counter is not its shard's: both are written
        b.written.extend((p, lp) if sharded else (p,))
        if sharded:
            b.specs.append(g._spec)
        for name, t in r.tensors.items():
            local = _dtensor.local_state(p, t, name) if sharded and name not in r.local_names else t
            b.lists[name].append(local)
            b.written.extend((t, local) if sharded else (t,))
        if sharded and r.local_names:
            # the DTensors whose local tensors the route handed over (8-bit states)
            b.written.extend(st[k] for st, k in r.sources if _dtensor.is_dtensor(st[k]))
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
    steps = b.lists.get("counters")
    if steps and b.device.type == "cpu" and steps[0].dtype is torch.float32:
        b.host_steps, b.step_versions = steps, [versions(steps)]
