"""What Adam, AdamW and SGD share: the step's skeleton, the AMP protocol, the
global-norm pass, bucketing tensors for the kernels, and checkpoint handling.

A step is at most two passes over the gradients:

1. ``grad_stats_`` (only when clipping, or when fusedopt's GradScaler asks the
   optimizer to find infs itself): one read of every grad, giving found_inf and
   the global sum of squares of the unscaled grads, per device;
2. the update, which applies ``1/scale`` and the clip coefficient to each grad
   element as it reads it, and skips everything on the device when found_inf
   is set.

Nothing in it reads a device value on the host.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter, eq, is_, is_not
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import _collectives, _dtensor, _ops
from .._versions import bump
from . import _compile, _torch_impl, _validate
from ._amp_flag import AmpScalingFlag

NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)
_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)

# fusedopt's own options; kept as optimizer attributes, never as param_group
# keys, so that state_dicts stay exactly torch's.
_FUSEDOPT_ATTRS = ("max_grad_norm", "master_weights", "state_dtype", "norm_group", "max_grad_value")
_FUSEDOPT_DEFAULTS = (None, False, None, None, None)


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
        self.param_ids = [id(p) for p in params]
        self.mask = mask
        self.buckets = buckets
        # every param's reduction group, with a grad or not (see _collectives)
        self.reduce_groups = reduce_groups
        self.has_dtensor = has_dtensor

    def reuse(self, signature, params, grads, mask, state) -> dict | None:
        # The checks run as C-level map() passes: this is the per-step cost of
        # every param, so no Python bytecode runs per tensor here.
        if signature != self.signature or mask != self.mask or list(map(id, params)) != self.param_ids:
            return None
        out = {}
        for key, b in self.buckets.items():
            sel = list(map(grads.__getitem__, b.index))
            if b.sharded:
                sel = _dtensor.local_grads(sel, b.specs)
                if sel is None or not all(map(is_, map(_dtensor.local_of, b.keys), b.params)):
                    return None
            dev = -1 if b.device.type == "cpu" else b.device.index
            if not all(map(eq, map(_get_device, sel), repeat(dev))):
                return None
            if not all(map(is_, map(state.get, b.keys), b.states)):
                return None
            if b.kind == "native":
                laid_out = _LAYOUT_CHECKS[b.layout]
                if not (
                    all(map(is_, map(type, sel), repeat(Tensor)))
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
            if not all(map(is_, map(dict.get, b.check_dicts, b.check_keys), b.check_tensors)):
                return None
            if list(map(_shape_of, b.params)) != b.shapes:
                return None
            out[key] = Bucket(
                b.kind, b.device, b.params, sel, b.lists, keys=b.keys, reduce=b.reduce, written=b.written,
                repeat=b.repeat,
            )
        return out


_get_device = Tensor.get_device
_dtype_of = attrgetter("dtype")
_is_sparse = attrgetter("is_sparse")
_shape_of = attrgetter("shape")


@dataclass
class DeviceAmp:
    """The step's control tensors as seen by one device (all on that device)."""

    grad_scale: Tensor | None = None
    found_inf: Tensor | None = None
    sumsq: Tensor | None = None


def check_fusedopt_options(max_grad_norm, master_weights, state_dtype, max_grad_value=None) -> None:
    _validate.check_positive_finite("max_grad_norm", max_grad_norm)
    _validate.check_positive_finite("max_grad_value", max_grad_value)
    if not isinstance(master_weights, bool):
        raise TypeError(f"master_weights must be a bool, got {type(master_weights).__name__}")
    if state_dtype not in _STATE_DTYPES:
        raise ValueError(f"Invalid state_dtype: {state_dtype} (use None, torch.float32, torch.bfloat16 or torch.float16)")


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


class FusedOptimizer(Optimizer):
    """Base of fusedopt's optimizers. Subclasses define the state and the op call."""

    # torch.amp.GradScaler hands us the scale and found_inf instead of unscaling
    # (for whom this is said, and why: _amp_flag.py).
    _step_supports_amp_scaling = AmpScalingFlag()

    def __init__(
        self, params, defaults, *, max_grad_norm, master_weights, state_dtype, norm_group=None, max_grad_value=None
    ):
        check_fusedopt_options(max_grad_norm, master_weights, state_dtype, max_grad_value)
        _collectives.check_norm_group(norm_group)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.max_grad_value = None if max_grad_value is None else float(max_grad_value)
        # the ranks plain-tensor params' norm is global over (DTensors: their mesh)
        self.norm_group = norm_group
        self.master_weights = master_weights
        self.state_dtype = state_dtype
        # What fusedopt's GradScaler hands a step and what a step leaves behind
        # (see last_grad_norm). A dict, not attributes: under torch.compile,
        # dynamo drops attribute stores on an Optimizer made inside the compiled
        # step (torch 2.13) or refuses them (2.11), but keeps a dict's updates.
        self._step_io: dict[str, Any] = {"last_grad_norm": None}
        super().__init__(params, defaults)
        # torch checks these after the params, in this order
        _validate.check_differentiable(
            type(self).__name__,
            defaults.get("differentiable"),
            defaults.get("fused"),
            max_grad_norm=max_grad_norm,
            max_grad_value=max_grad_value,
            master_weights=master_weights,
            state_dtype=state_dtype,
        )
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    @property
    def last_grad_norm(self) -> Tensor | None:
        """Pre-clip global norm of the unscaled grads of the last step that
        computed it (a device tensor; inf/nan after an overflow)."""
        return self._step_io.get("last_grad_norm")

    @last_grad_norm.setter
    def last_grad_norm(self, value: Tensor | None) -> None:
        self._step_io["last_grad_norm"] = value

    # -- pickling / copying keeps fusedopt's own options ----------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in _FUSEDOPT_ATTRS:
            state[name] = getattr(self, name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also called by torch's load_state_dict with only state and param_groups:
        # the options this optimizer already has must survive that.
        for name, default in zip(_FUSEDOPT_ATTRS, _FUSEDOPT_DEFAULTS):
            if name not in state and name not in self.__dict__:
                state[name] = default
        super().__setstate__(state)
        self.__dict__.setdefault("_step_io", {"last_grad_norm": None})

    # -- what subclasses provide ----------------------------------------------------

    def _plan_signature(self, group: dict) -> tuple:
        """Group settings that change the buckets (not lr and the like)."""
        return (self.master_weights, self.state_dtype, self.max_grad_norm is None, self.norm_group)

    def _route(self, p: Tensor, g: Tensor, group: dict, occurrence: int = 0) -> Route:
        """Creates p's state if needed and says which bucket p goes to.
        ``occurrence`` counts earlier listings of p in the group (tied weights)."""
        raise NotImplementedError

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        raise NotImplementedError

    def _check_group(self, group: dict, index: int) -> None:
        """Refuses hyperparameters the kernels cannot take (runs every step)."""

    def _torch_group_step(self, group: dict) -> None:
        """The group's step through torch's own implementation (differentiable=True)."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------

    def _state_dtype_for(self, p: Tensor) -> torch.dtype:
        if p.is_complex() or not p.is_floating_point():
            return p.dtype
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if self._has_master(p) else p.dtype

    def _has_master(self, p: Tensor) -> bool:
        return self.master_weights and p.dtype in (torch.float16, torch.bfloat16)

    def _master_for(self, p: Tensor, state: dict) -> Tensor | None:
        if not self._has_master(p):
            return None
        master = state.get("master_param")
        if master is None:
            # float() keeps a dense param's strides, so the master shares its layout
            master = state["master_param"] = p.detach().float()
        return master

    @staticmethod
    def _lr_args(lr, device: torch.device, ops) -> tuple[float, Tensor | None]:
        if isinstance(lr, Tensor):
            # the kernels read a float32 or float64 lr; torch accepts any dtype
            dtype = lr.dtype if lr.dtype in (torch.float32, torch.float64) else torch.float32
            return 0.0, lr.detach().to(device=device, dtype=dtype, non_blocking=True)
        if ops is not _ops.reference and torch.compiler.is_compiling():
            # A float lr that a scheduler changes becomes a symbolic input of the
            # graph after one recompile; passed as a native op's float argument it
            # would be specialized again, one recompile per value. As a float64
            # tensor it stays an input (the kernels read it as the same double).
            # (The reference's torch ops take the symbolic float as it is, and so
            # compute what they compute eagerly.)
            return 0.0, torch.full((), lr, dtype=torch.float64, device=device)
        return float(lr), None

    @staticmethod
    def _check_grad_device(p: Tensor, g: Tensor) -> None:
        if g.device != p.device:
            raise RuntimeError(
                f"fusedopt: a parameter on {p.device} has its grad on {g.device}; "
                "grads must live on their parameter's device"
            )

    # -- bucketing ---------------------------------------------------------------------

    def _bucket_group(self, group: dict) -> dict[tuple, Bucket]:
        if torch.compiler.is_compiling():
            # dynamo runs _init_group eagerly and guards what it returns (see _compile.py)
            flat: list[Tensor] = []
            layout = self._init_group(group, flat)
            if layout is None:
                return None
            norm = _collectives.of_norm_group(self.norm_group)
            return _compile.unflatten(
                layout, flat, lambda *args: Bucket(*args, keys=args[2], reduce=norm)
            )
        params = group["params"]
        # .grad of a tensor subclass (DTensor) goes through torch-function
        # handling, ~10x the cost of a plain attribute read
        with torch._C.DisableTorchFunctionSubclass():
            grads = [p.grad for p in params]
        mask = list(map(is_not, grads, repeat(None)))
        signature = self._plan_signature(group)
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get(id(group))
        if plan is not None and plan[0] is group:
            buckets = plan[1].reuse(signature, params, grads, mask, self.state)
            if buckets is not None:
                return buckets
        buckets = self._build_buckets(group, params, grads)
        self._store_plan(group, signature, params, mask, buckets)
        return buckets

    def _build_buckets(self, group: dict, params: list[Tensor], grads: list[Tensor | None]) -> dict[tuple, Bucket]:
        """Checks and routes every param with a grad (creating its state if
        needed) into the buckets of one group."""
        buckets = {}
        norm = _collectives.of_norm_group(self.norm_group)
        occurrences: dict[int, int] = {}
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            self._check_grad_device(p, g)
            sharded = _dtensor.check_grad(p, g)
            # a param listed twice: its later occurrences go to buckets of their own
            occurrence = occurrences.get(id(p), 0)
            occurrences[id(p)] = occurrence + 1
            r = self._route(p, g, group, occurrence)
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
            b.states.append(self.state.get(p))
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

    def _store_plan(self, group: dict, signature: tuple, params: list[Tensor], mask: list[bool], buckets) -> None:
        dtensors = [p for p in params if _dtensor.is_dtensor(p)]
        reduce_groups = _collectives.ordered_groups(map(_collectives.of_dtensor, dtensors))
        plan = GroupPlan(signature, params, mask, buckets, reduce_groups, bool(dtensors))
        self.__dict__.setdefault("_plans", {})[id(group)] = (group, plan)

    def _init_group(self, group: dict, flat: list[Tensor]) -> tuple | None:
        """The compiled step's bucketing: torch.compile calls this eagerly, by
        name, as it does torch's optimizers' _init_group (see _compile.py). It
        stores the group's plan as the eager step does (the reduction groups and
        step_backends() read it). None: the group has DTensor params, which the
        compiled route does not take (the step then runs eagerly)."""
        params = group["params"]
        if any(map(_dtensor.is_dtensor, params)):
            return None
        grads = [p.grad for p in params]
        buckets = self._build_buckets(group, params, grads)
        self._store_plan(group, self._plan_signature(group), params, list(map(is_not, grads, repeat(None))), buckets)
        return _compile.flatten(buckets, flat)

    def _forget_plans(self) -> None:
        self.__dict__["_plans"] = {}

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._forget_plans()

    # -- the step --------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        if _torch_impl.uses_torch_step(self):
            return _torch_impl.step(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        request = self._step_io.get("amp")
        if request is None:
            # torch.amp.GradScaler's protocol: attributes (getattr, which
            # torch.compile guards; a read through __dict__ it does not)
            grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        else:
            grad_scale, found_inf = request
        found = self._fused_step(grad_scale, found_inf, find_infs=request is not None and found_inf is None)
        if found is not None:
            self._step_io["found"] = found
        return loss

    def _amp_step(self, grad_scale, found_inf) -> dict[torch.device, Tensor] | None:
        """The step fusedopt.GradScaler runs: through step() (so step hooks and
        lr-scheduler bookkeeping see it), with the scale and found_inf passed as
        torch's AMP protocol passes them. Without a found_inf the optimizer finds
        infs itself and returns its per-device flags. The request and the result
        go through a dict (see _step_io), which a compiled step, or a compiled
        train step around this call, traces on every torch version."""
        self._step_io["amp"] = (grad_scale, found_inf)
        try:
            self.step()
            return self._step_io.get("found")
        finally:
            self._step_io.pop("amp", None)
            self._step_io.pop("found", None)

    def _fused_step(
        self,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
        *,
        find_infs: bool = False,
    ) -> dict[torch.device, Tensor] | None:
        """Runs the step. With ``find_infs`` (fusedopt's GradScaler), the optimizer
        finds inf/nan grads itself in its stats pass and returns the per-device
        found_inf tensors it computed; a step with infs then updates nothing."""
        # Everything is checked before the first kernel (a refused step changes
        # nothing): each group's hyperparameters, then, while the plans are built,
        # its tensors. any() stops at the first param with a grad.
        for index, group in enumerate(self.param_groups):
            if any(p.grad is not None for p in group["params"]):
                self._check_group(group, index)
        work = [(group, self._bucket_group(group)) for group in self.param_groups]
        if torch.compiler.is_compiling() and any(buckets is None for _, buckets in work):
            return _compile.run_eagerly(self._fused_step, grad_scale, found_inf, find_infs=find_infs)
        need_stats = self.max_grad_norm is not None or find_infs
        # ranks that share params' norm or inf flags (sharded params, ZeRO): all
        # join the same collectives, even with no grad (or an empty shard) here
        groups = self._reduce_groups() if need_stats or found_inf is not None else []
        if not groups and not any(buckets for _, buckets in work):
            return {} if find_infs else None

        devices = []
        for _, buckets in work:
            for b in buckets.values():
                if b.device not in devices:
                    devices.append(b.device)

        amp = {d: DeviceAmp() for d in devices}
        for d in devices:
            amp[d].grad_scale = _on(grad_scale, d)
            amp[d].found_inf = _on(found_inf, d)

        computed = None
        if need_stats or groups:
            home = devices[0] if devices else groups[0].device()
            # a tied weight listed twice counts once in the global norm
            parts = [
                (b.device, b.reduce, b.grads, _ops.ops_for(b.device) if b.native else _ops.reference)
                for _, buckets in work
                for b in buckets.values()
                if not b.repeat
            ]
            found, sumsq = _collectives.global_stats(
                parts, groups, grad_scale, found_inf, home, need_stats, max_value=self.max_grad_value or 0.0
            )
            if need_stats:
                # the dict, not the property: dynamo (torch < 2.13) cannot trace a
                # property setter on an optimizer
                self._step_io["last_grad_norm"] = sumsq.sqrt().reshape(())
            for d in devices:
                if self.max_grad_norm is not None:
                    amp[d].sumsq = _on(sumsq, d)
                if find_infs or found_inf is not None:
                    amp[d].found_inf = _on(found, d)
            if find_infs:
                computed = {d: _on(found, d) for d in devices or [home]}

        for group, buckets in work:
            for bucket in buckets.values():
                ops = _ops.ops_for(bucket.device) if bucket.native else _ops.reference
                self._apply_bucket(ops, bucket, group, amp[bucket.device], bucket.device)
                if bucket.native:
                    bump(bucket.written)  # the plain-torch paths' in-place ops bump their own
        return computed

    def _reduce_groups(self) -> list:
        """The reduction groups of this optimizer's params, in the order every
        rank joins them (see fusedopt/_collectives.py); the plans hold them."""
        norm = _collectives.of_norm_group(self.norm_group)
        if torch.compiler.is_compiling():
            # a compiled step has no DTensor params (those steps run eagerly), so
            # no plan holds a group of its own; and dynamo (torch < 2.13) cannot
            # trace id() of a dict
            return _collectives.ordered_groups([norm])
        plans = [self.__dict__["_plans"][id(g)][1] for g in self.param_groups]
        if self.max_grad_norm is not None and self.norm_group is None:
            if not any(plan.has_dtensor for plan in plans):
                _collectives.warn_local_norm_once(self)
        return _collectives.ordered_groups([norm] + [rg for plan in plans for rg in plan.reduce_groups])

    def step_backends(self) -> dict[str, int]:
        """How many params each backend ("cuda", "cpu-native", "reference",
        "sparse") updated in the last step, read from the step plans."""
        counts: dict[str, int] = {}
        for _, plan in self.__dict__.get("_plans", {}).values():
            for b in plan.buckets.values():
                name = _ops.backend(b.device) if b.native else b.kind
                counts[name] = counts.get(name, 0) + len(b.params)
        return counts

    # -- checkpoints -------------------------------------------------------------------

    def _normalize_loaded_state(self) -> None:
        """After load_state_dict: steps as float32 0-dim tensors on the param's
        device (torch keeps them on the CPU, in float64 under a float64 default)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device).reshape(())

    def _params_by_saved_id(self, state_dict: dict) -> dict[Any, Tensor]:
        saved = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        mine = [p for g in self.param_groups for p in g["params"]]
        return dict(zip(saved, mine))

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load_state_dict, hooks and all, except that the floating state
        tensors keep the dtype this optimizer keeps them in: torch's loader casts
        them to their param's dtype, which would round fp32 masters and fp32
        moments of bf16 params. They bypass that cast between the user's
        pre-hooks (which see and may change everything) and post-hooks (which see
        the finished state)."""
        kept: dict[Tensor, dict[str, Tensor]] = {}

        def set_aside(optimizer, sd):
            by_id = self._params_by_saved_id(sd)
            passed = {}
            for pid, st in sd["state"].items():
                p = by_id.get(pid)
                if isinstance(st, dict) and p is not None:
                    ours = {k: v for k, v in st.items() if k != "step" and isinstance(v, Tensor) and v.is_floating_point()}
                    kept[p] = ours
                    st = {k: v for k, v in st.items() if k not in ours}
                passed[pid] = st
            return {**sd, "state": passed}

        def restore(optimizer):
            for p, tensors in kept.items():
                for key, value in tensors.items():
                    if key == "master_param":
                        if not self._has_master(p):
                            continue  # this optimizer keeps no master for p
                        dtype = torch.float32
                    elif p.is_floating_point():
                        dtype = self._state_dtype_for(p)
                    else:
                        dtype = value.dtype
                    self.state[p][key] = value.to(device=p.device, dtype=dtype)
            self._normalize_loaded_state()
            self._after_load()

        self._forget_plans()
        pre = self.register_load_state_dict_pre_hook(set_aside)
        post = self.register_load_state_dict_post_hook(restore, prepend=True)
        try:
            super().load_state_dict(state_dict)
        finally:
            pre.remove()
            post.remove()

    def _after_load(self) -> None:
        """Subclass hook: reset what a loaded state invalidates."""


def _on(t: Tensor | None, device: torch.device) -> Tensor | None:
    if t is None or t.device == device:
        return t
    return t.to(device, non_blocking=True)
