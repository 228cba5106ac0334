"""The collectives of a sharded step: per-rank partial sums made global.

The global gradient norm and found_inf are sums over ranks of per-rank parts.
Which ranks hold the parts of a tensor is its *reduction group*:

* a DTensor (FSDP2, HSDP, TP): the mesh dims on which it is sharded. Its
  Replicate dims hold copies and are never reduced (that would count them
  twice); several sharded dims are flattened into one group, so one all-reduce
  covers them;
* plain tensors: the process group the optimizer's ``norm_group`` names (ZeRO,
  or any split of the params over ranks), else none (DDP: the grads are already
  all-reduced, so each rank's norm is the global one).

The stats pass leaves one 2-element buffer [found_inf, sum of squares] per
(group, device); each group's buffer travels in one all-reduce and the results
are added, all on the device (on a GPU the collective is ordered on the stream;
nothing waits on the host). Every rank must issue the same collectives in the
same order or the job hangs, so the groups an optimizer joins come from its
params' placements and its norm_group (the same on every rank), never from
which params have grads or a non-empty shard on this rank.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover - torch without torch.distributed
    dist = None

NORM_GROUP_WORDS = ("local", "world")


class ReduceGroup:
    """The process group(s) whose all-reduce adds up one set of per-rank parts.
    One instance per distinct tuple of process groups, so instances compare by
    identity and serve as dict and bucket keys."""

    __slots__ = ("groups", "device_types", "label")

    def __init__(self, groups: tuple, label: str):
        self.groups = groups
        # the devices the backend can reduce on (gloo: cpu and cuda; nccl: cuda)
        types = getattr(groups[0], "_device_types", None)
        self.device_types = tuple(d.type for d in types) if types else None
        self.label = label

    def __repr__(self) -> str:
        return f"ReduceGroup({self.label})"

    def device(self) -> torch.device:
        """Where a buffer for this group lives when no tensor says otherwise."""
        return _reduce_device(self.device_types)

    def all_reduce_(self, buf: Tensor, op=None) -> None:
        t = buf
        if self.device_types is not None and buf.device.type not in self.device_types:
            # e.g. FSDP2's CPU offload with nccl: reduce on the GPU, come back
            t = buf.to(self.device())
        for group in self.groups:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=group)
        if t is not buf:
            buf.copy_(t)


def _reduce_device(device_types) -> torch.device:
    kind = device_types[0] if device_types and "cpu" not in device_types else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    return torch.device(kind, getattr(torch, kind).current_device())


def traced(rg: ReduceGroup | None) -> tuple | None:
    """A reduction group as a compiled step holds it: the names of its process
    groups and the devices they reduce on, constants of the graph. (A
    ReduceGroup object could reach the graph only through a guarded source; the
    optimizer's _init_group, which finds the groups eagerly, hands the trace
    tensors and a constant layout only.) Its all-reduce (all_reduce_) is then the
    traceable functional collective, which takes a process group by name: the
    global norm's all-reduce is inside the graph, and on gloo or nccl it is the
    reduction dist.all_reduce runs, so the sums are the eager step's bit for bit."""
    if rg is None:
        return None
    return tuple(g.group_name for g in rg.groups), rg.device_types


def device_of(rg) -> torch.device:
    """Where a buffer for reduction group ``rg`` (a ReduceGroup or its traced
    form) lives when no tensor says otherwise."""
    return rg.device() if isinstance(rg, ReduceGroup) else _reduce_device(rg[1])


def all_reduce_(rg, buf: Tensor, op: str = "sum") -> None:
    """buf := its sum (op="max": its max) over reduction group ``rg``: a
    ReduceGroup (eager) or its traced() form (a compiled step)."""
    if isinstance(rg, ReduceGroup):
        rg.all_reduce_(buf, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return
    from torch.distributed import _functional_collectives as funcol

    names, device_types = rg
    t = buf
    if device_types is not None and buf.device.type not in device_types:
        t = buf.to(_reduce_device(device_types))
    for name in names:
        t = funcol.all_reduce(t, op, name)
    buf.copy_(t)


_BY_GROUPS: dict[tuple, ReduceGroup] = {}
_BY_LAYOUT: dict[tuple, tuple] = {}


def _canonical(groups: tuple, label: str) -> ReduceGroup:
    rg = _BY_GROUPS.get(groups)
    if rg is None:
        rg = _BY_GROUPS[groups] = ReduceGroup(groups, label)
    return rg


def _mesh_dims_group(mesh, dims: tuple[int, ...]) -> ReduceGroup:
    names = mesh.mesh_dim_names
    label = "+".join(names[d] if names else f"dim{d}" for d in dims) + f" of {tuple(mesh.shape)} mesh"
    if len(dims) == 1:
        return _canonical((mesh.get_group(dims[0]),), label)
    if names is not None and hasattr(mesh, "_flatten"):
        # one group spanning the dims (torch creates it once and caches it in
        # the mesh), so one all-reduce instead of one per dim
        flat = mesh[tuple(names[d] for d in dims)]._flatten()
        return _canonical((flat.get_group(),), label)
    return _canonical(tuple(mesh.get_group(d) for d in dims), label)


def of_dtensor(t: Tensor, *, partial_ok: bool = False) -> ReduceGroup | None:
    """The reduction group of a DTensor: its mesh dims that are not Replicate
    (None when it is replicated everywhere). Partial dims count only with
    ``partial_ok`` (an inf flag may be maxed over them; a sum of squares of
    partial sums is not the square of their sum)."""
    spec = t._spec
    mesh, placements = spec.mesh, spec.placements
    key = (id(mesh), placements, partial_ok)
    hit = _BY_LAYOUT.get(key)
    if hit is not None and hit[0] is mesh:
        return hit[1]
    if not partial_ok and any(p.is_partial() for p in placements):
        raise ValueError(
            f"fusedopt: a DTensor grad laid out as {tuple(placements)} holds partial sums; its norm needs the "
            "reduced grad: redistribute it to its parameter's placements first"
        )
    dims = tuple(d for d, p in enumerate(placements) if not p.is_replicate())
    rg = _mesh_dims_group(mesh, dims) if dims else None
    _BY_LAYOUT[key] = (mesh, rg)
    return rg


def check_norm_group(norm_group) -> None:
    if norm_group is None or (isinstance(norm_group, str) and norm_group in NORM_GROUP_WORDS):
        return
    if dist is not None and dist.is_available() and isinstance(norm_group, dist.ProcessGroup):
        return
    raise TypeError(
        "norm_group must be None, 'local', 'world' or a torch.distributed.ProcessGroup, got "
        f"{norm_group!r}"
    )


def of_norm_group(norm_group) -> ReduceGroup | None:
    """The reduction group of the plain-tensor params (see check_norm_group)."""
    if norm_group is None or norm_group == "local":
        return None
    if norm_group == "world":
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("fusedopt: norm_group='world' needs torch.distributed to be initialized before the step")
        return _canonical((dist.group.WORLD,), "world")
    return _canonical((norm_group,), f"process group of {dist.get_world_size(norm_group)} ranks")


def warn_local_norm_once(opt) -> None:
    """max_grad_norm on plain tensors in a multi-rank job without norm_group:
    say once that the norm is this rank's own."""
    if opt.__dict__.get("_fusedopt_norm_warned"):
        return
    opt.__dict__["_fusedopt_norm_warned"] = True
    if dist is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    warnings.warn(
        f"fusedopt: {type(opt).__name__}(max_grad_norm=...) on plain-tensor params in a job of "
        f"{dist.get_world_size()} ranks clips by each rank's own gradient norm, because no norm_group was "
        "given. Under DDP (grads all-reduced before the step) that is the global norm: pass norm_group='local' "
        "to say so. If each rank steps only part of the params (ZeroRedundancyOptimizer, or a manual split), "
        "pass norm_group='world' (or the ProcessGroup the params are split over) to clip by the global norm.",
        UserWarning,
        stacklevel=7,  # the user's opt.step(), through no_grad and torch's step hooks
    )


def ordered_groups(reduce_groups) -> list[ReduceGroup]:
    """Distinct groups, first appearance first (the order every rank uses)."""
    return list(dict.fromkeys(rg for rg in reduce_groups if rg is not None))


def _on(t: Tensor | None, device: torch.device) -> Tensor | None:
    if t is None or t.device == device:
        return t
    return t.to(device, non_blocking=True)


def global_stats(
    parts, groups, grad_scale, found_inf, home, compute: bool, max_value: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The global [found_inf, sum of squares of the unscaled grads], on ``home``.

    parts: (device, reduce group or None, stats) per stats launch, where
    ``stats(grad_scale, found_inf, sumsq, max_value)`` is a grad_stats_ over that
    launch's grads (a list op with its grads bound, or a native plan's); with
    ``compute`` False only found_inf is combined (no grad is read). groups: every
    group this rank must join, in the common order, including groups for which
    it has no grads (it then contributes zeros). max_value > 0: the sum is of
    the grads clamped to [-max_value, max_value] (max_grad_value). found_inf: a
    flag computed elsewhere (torch's GradScaler) to combine as well. Returns 1-element views
    of one buffer: found (nonzero means skip) and sumsq."""
    bufs: dict = {}
    if compute:
        for device, rg, stats in parts:
            buf = bufs.get((rg, device))
            if buf is None:
                buf = bufs[(rg, device)] = torch.zeros(2, dtype=torch.float32, device=device)
            stats(_on(grad_scale, device), buf[0:1], buf[1:2], max_value)
    per_group: dict = {}
    for (rg, _), buf in bufs.items():
        buf = _on(buf, home)
        per_group[rg] = buf if rg not in per_group else per_group[rg] + buf
    total = per_group.pop(None, None)
    if total is None:
        total = torch.zeros(2, dtype=torch.float32, device=home)
    flag = None if found_inf is None else _on(found_inf, home).reshape(1).float()
    if flag is not None:
        total[0:1] += flag
    for rg in groups:
        buf = per_group.pop(rg, None)
        if buf is None:
            buf = torch.zeros(2, dtype=torch.float32, device=home)
        if flag is not None:
            buf[0:1] += flag
        all_reduce_(rg, buf)
        total += buf
    if per_group:
        raise RuntimeError(f"fusedopt: internal error: reduction groups {list(per_group)} were not joined")
    return total[0:1], total[1:2]


def max_found_(found: Tensor, groups) -> None:
    """found_inf := its max over every group (what torch's DTensor handler of
    the unscale op does), so that every rank skips and backs off alike."""
    for rg in groups:
        all_reduce_(rg, found, op="max")
