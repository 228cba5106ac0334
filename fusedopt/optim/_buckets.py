"""The work items of a step: which tensors each kernel call takes (buckets),
and how a param is routed into one. Each bucket is built with its reuse guard
(_reuse_guard.py); the group caches that keep both between steps: _bucket_cache.py.

A param group's params are routed into buckets (one device, one dtype per
list, one kernel call each); building re-checks everything before any tensor
is touched.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import _collectives, _dtensor
from . import _validate
from ._reuse_guard import ReuseGuard

NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)


@dataclass
class Bucket:
    """The work item of a step: the tensors one kernel call updates (one
    device, one dtype per list). What it was built for, and the check that a
    later step may run it again, is its ReuseGuard (_reuse_guard.py).

    ``kind`` is "native" (the device's kernels), "reference" (plain torch, for
    tensors the kernels do not take), "sparse" (SGD's sparse grads) or "torch"
    (SGD's grads of another dtype than their param's: torch's own SGD)."""

    kind: str
    device: torch.device
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    lists: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))
    # the params as self.state keys: ``params`` itself, except for DTensor params,
    # whose ``params``/``grads``/``lists`` hold the local shards the kernels take
    keys: list[Tensor] = field(default_factory=list)
    # the ranks the bucket's grads' sum of squares is summed over (see _collectives)
    reduce: Any = None
    # every tensor the native kernels write: their autograd versions are bumped
    written: list[Tensor] = field(default_factory=list)
    # a second (third...) occurrence of params listed twice in the group: run
    # after the first, and left out of the global norm (see _repeats.py)
    repeat: bool = False
    # a native bucket's plan in the native library (fusedopt/_native_plan.py),
    # made with the bucket; a step's copy of the bucket carries it once it is bound
    native_plan: Any = None
    # the params with fp32 masters and what each looked like after the last step
    # that wrote it (fusedopt/optim/_masters.py); shared with the step's copies
    masters: Any = None
    # a reused plan whose grads this step has not bound yet (see
    # _plan_binds.bind_reused), and, on the bucket whose plan op runs first
    # in the step, the binds that op makes for every such plan
    unbound: bool = False
    binds: Any = None

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
                  grads: list[Tensor | None]) -> tuple[dict[tuple, Bucket], dict[tuple, ReuseGuard]]:
    """Checks and routes every param with a grad into the buckets of one group,
    each with its reuse guard (under the same key): ``route(p, g, group,
    occurrence)`` (the optimizer's: it creates p's state if needed) says where
    each goes; ``state`` is the optimizer's; ``norm`` the reduction group of
    plain params' norm."""
    buckets = {}
    guards = {}
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
            b = buckets[key] = Bucket(r.kind, lp.device, reduce=reduce, repeat=occurrence > 0)
            guards[key] = ReuseGuard(r.kind, layout_of(lp), sharded)
        guard = guards[key]
        b.keys.append(p)
        b.params.append(lp)
        b.grads.append(lg)
        guard.states.append(state.get(p))
        guard.index.append(i)
        guard.shapes.append(lp.shape)
        guard.grad_dtypes.append(lg.dtype)
        # a DTensor's version counter is not its shard's: both are written
        b.written.extend((p, lp) if sharded else (p,))
        if sharded:
            guard.specs.append(g._spec)
        for name, t in r.tensors.items():
            local = _dtensor.local_state(p, t, name) if sharded and name not in r.local_names else t
            b.lists[name].append(local)
            b.written.extend((t, local) if sharded else (t,))
        if sharded and r.local_names:
            # the DTensors whose local tensors the route handed over (8-bit states)
            b.written.extend(st[k] for st, k in r.sources if _dtensor.is_dtensor(st[k]))
        for st, k in r.sources:
            guard.check_dicts.append(st)
            guard.check_keys.append(k)
            guard.check_tensors.append(st[k])
    return buckets, guards
