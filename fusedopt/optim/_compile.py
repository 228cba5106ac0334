"""The step's route under torch.compile.

Eagerly, a step buckets its params in Python and keeps the result in a bucket cache
(see _bucket_cache.GroupCache) that later steps check and reuse. Under torch.compile neither
is wanted in the graph: dynamo would trace the per-param Python on every
(re)compilation, tens of milliseconds a param, and the cache's checks are what
its guards already do. So the compiled step asks for its buckets through the
optimizer's ``_init_group``, which dynamo calls *eagerly* (untraced) for any
torch.optim.Optimizer while it traces ``step``, as it does for torch's own
optimizers: the method creates missing state and returns the buckets' tensors
appended to an empty list, plus a constant that says how they split into
buckets. Dynamo then guards every param and state tensor it was handed
(dtype, device, shape, strides, the state's keys) and whether each grad is
None, so those changes recompile, and the graph reads the tensors fresh from
their sources on every call: a step never updates stale tensors. Grads handed
through _init_group are guarded only for None-ness (dynamo's rule for every
optimizer's grads); the step's argument checks read each grad through its
param, which guards it fully on torch 2.13. Where a grad's dtype or layout
change is not guarded, the kernels' own argument checks, inductor's stride
asserts or the reference path's dtype check (fusedopt/_traced_checks.py)
raise instead. The graph itself holds only the fused ops (and the reference
path's torch ops for tensors the kernels do not take).

DTensor params (FSDP2, HSDP, tensor parallel) compile too. _init_group hands
dynamo the DTensors themselves (params, grads, states), not their local
shards: a DTensor comes from a source dynamo knows (the param group, p.grad,
the state dict), so it is guarded there and read afresh on every call, FSDP2's
new grad DTensors of each step included; a local shard would be a tensor
dynamo was never shown, held by a weak reference to that one tensor (stale or
dead by the next step). The trace unwraps each to its local shard (unflatten),
and the kernels update the shards as in an eager step. The global norm's
all-reduce (and found_inf's) is a functional collective inside the graph: the
layout names each bucket's reduction group by its process groups' names
(_collectives.traced), constants of the graph. A step with 8-bit states or
stochastic rounding on DTensor params still runs eagerly (see run_eagerly):
their per-shard quantization blocks and rounding offsets are not handed to the
trace.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import torch
from torch import Tensor

from .. import _collectives, _dtensor, _ops


def flatten(buckets: dict[tuple, Any], out: list[Tensor], state: dict) -> tuple:
    """Appends every tensor of `buckets` to `out`; returns the constant layout
    that `unflatten` rebuilds them from (places, kinds, devices, list lengths,
    whether the bucket is of DTensor params, its reduction group's traced form).

    A bucket of DTensor params hands over the DTensors themselves (params,
    grads, states; `state` is the optimizer's), not the local shards its lists
    hold: dynamo knows a source for each DTensor (the param group, p.grad, the
    state dict) and reads it afresh on every call, where a local shard, a tensor
    it was never shown, would be held by a weak reference to that very tensor:
    FSDP2 makes new grads every step, and a step would read the dead or stale
    one. The trace unwraps them (unflatten)."""
    layout = []
    # a bucket's place stands for its key: dynamo makes the layout a constant of
    # the graph, and keys hold objects it cannot (the norm's ReduceGroup)
    for key, b in enumerate(buckets.values()):
        # resolve the backend now (eagerly), so that the traced step finds it cached
        _ops.backend(b.device)
        names = tuple(b.lists)
        sharded = bool(b.keys) and _dtensor.is_dtensor(b.keys[0])
        if sharded:
            whole = _dtensors_of(b.keys, state)
            out.extend(b.keys)
            out.extend(p.grad for p in b.keys)
            for name in names:
                out.extend(whole(t, name) for t in b.lists[name])
        else:
            out.extend(b.params)
            out.extend(b.grads)
            for name in names:
                out.extend(b.lists[name])
        layout.append((key, b.kind, b.device, len(b.params), tuple((n, len(b.lists[n])) for n in names), sharded,
                       _collectives.traced(b.reduce)))
    return tuple(layout)


def _dtensors_of(params: list[Tensor], state: dict) -> Callable:
    """A lookup of the DTensor state whose local shard is a bucket list's entry.
    Per-rank 0-dim states (the step, SGD's first-step flags) are handed over as
    they are, as the plain-tensor route hands them."""
    by_local = {}
    for p in params:
        for t in state[p].values():
            if _dtensor.is_dtensor(t):
                by_local[id(t._local_tensor)] = t

    def whole(t: Tensor, name: str) -> Tensor:
        found = by_local.get(id(t))
        if found is not None:
            return found
        if t.dim() == 0:
            return t
        raise RuntimeError(f"fusedopt: internal error: list {name!r} of a DTensor bucket holds a local tensor "
                           "that is no state of its params")

    return whole


def unflatten(layout: tuple, flat: list[Tensor], make_bucket: Callable) -> dict[tuple, Any]:
    """The buckets `flatten` described, made with ``make_bucket(kind, device,
    params, grads, lists, keys, reduce)``, holding the tensors dynamo handed the
    trace; a DTensor bucket's lists hold their local shards (DTensor params are
    its keys, as in an eager step's buckets)."""
    buckets = {}
    at = 0
    for key, kind, device, n, names, sharded, reduce in layout:
        params, grads = flat[at : at + n], flat[at + n : at + 2 * n]
        at += 2 * n
        keys = params
        if sharded:
            params, grads = [_dtensor.local(p) for p in params], [_dtensor.local(g) for g in grads]
        lists = defaultdict(list)
        for name, length in names:
            lists[name] = flat[at : at + length]
            if sharded:
                lists[name] = [_dtensor.local(t) for t in lists[name]]
            at += length
        buckets[key] = make_bucket(kind, device, params, grads, lists, keys, reduce)
    return buckets


def lr_args(lr, device: torch.device, ops) -> tuple[float, Tensor | None]:
    """A group's lr as a native or reference op takes it: (float, None), or
    (0.0, tensor) for a tensor lr and, under torch.compile, for a float one."""
    if isinstance(lr, Tensor):
        # the kernels read a float32 or float64 lr; torch accepts any dtype
        dtype = lr.dtype if lr.dtype in (torch.float32, torch.float64) else torch.float32
        # a one-element lr of any shape, as torch takes it (the foreach ops
        # of the plain-torch path take 0-dim scalar tensors only)
        return 0.0, lr.detach().reshape(()).to(device=device, dtype=dtype, non_blocking=True)
    if ops is not _ops.reference and torch.compiler.is_compiling():
        # A float lr that a scheduler changes becomes a symbolic input of the
        # graph after one recompile; passed as a native op's float argument it
        # would be specialized again, one recompile per value. As a float64
        # tensor it stays an input (the kernels read it as the same double;
        # how it is made matters to AOT backends: see float64_input).
        # (The reference's torch ops take the symbolic float as it is, and so
        # compute what they compute eagerly.)
        return 0.0, float64_input(lr, device)
    return float(lr), None


def hyper_args(hyper: tuple, device: torch.device) -> tuple[list[float], Tensor]:
    """A native op's hyperparameters under torch.compile: the values as a float64
    tensor on `device` (the kernels read it: csrc/cpu/rule_call.h hyper_of, the
    CUDA rule kernel's hyper_ptr), and a float list that says only which values
    are zero (1.0 where nonzero).

    Why: a float a scheduler changes (OneCycleLR's betas or momentum) becomes a
    symbolic input of the graph after dynamo's first recompile, as lr does (see
    lr_args). Handed to the op's ``float[] hyper`` it would be specialized
    again, one recompile per value; in a tensor it stays an input. The float list
    still carries what the host side reads from it: the structure of the call
    (Adam's amsgrad, SGD's momentum == 0 vs not, which decide the state lists
    the call carries; csrc/rules/*.h active_states). Those zero tests guard the
    graph: a group whose momentum becomes 0, or that switches amsgrad or
    nesterov, recompiles, as its state lists change anyway. The kernels
    compute from the same doubles as the eager float path, so the compiled step
    equals the eager one bit for bit.
    """
    # a tensor value (Adam's tensor betas) counts as nonzero: reading it would be a
    # graph break, and no rule's structure depends on a value that may be a tensor
    structure = [1.0 if isinstance(h, Tensor) or h != 0 else 0.0 for h in hyper]
    return structure, torch.stack([float64_input(h, device) for h in hyper])


def float64_input(x, device: torch.device) -> Tensor:
    """A float of the step (lr, a beta) as a 0-dim float64 tensor holding the
    same double, built so that the float stays an input of the graph (a
    tensor, Adam's tensor beta, is converted exactly, as float() would read it).

    Dynamo turns a float that changed into a float64 tensor input, and AOT's
    pass that turns the float ops back into tensor ops keeps it an input only
    where it can rewrite each use: a pointwise op such as this add can be,
    ``torch.full((), x)`` or ``torch.tensor([x])`` cannot, and make AOT
    backends (aot_eager, inductor) specialize the float again, one recompile
    per value. (0.0 + x is x exactly.)
    """
    return torch.zeros((), dtype=torch.float64, device=device) + x


def run_eagerly(step, *args, **kwargs):
    """Runs `step` outside the compiled graph (a graph break; an error under
    fullgraph=True): for what the compiled route does not take (8-bit states or
    stochastic rounding on DTensor params)."""
    return torch.compiler.disable(step)(*args, **kwargs)
