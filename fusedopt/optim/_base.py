"""What every fusedopt optimizer shares: the step's skeleton. The pieces it is made
of live beside it: each param's state and route (_param_state.py), the step
buckets (_buckets.py, built and reused by _bucketing.py, kept between steps by
_bucket_cache.py), the stats pass and AMP control tensors (_step_stats.py),
checkpoints (_checkpoint.py), validation (_validate.py), master weights that
follow their params (_masters.py) and the compiled route (_compile.py).

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

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import _collectives, _native_plan, _ops
from .._versions import bump
from . import _compile, _idiom, _masters, _plan_binds, _stochastic_rounding, _torch_impl, _validate
from ._amp_flag import AmpScalingFlag
from ._bucketing import BucketingMixin
from ._checkpoint import CheckpointMixin
from ._param_state import ParamStateMixin
from ._buckets import Bucket, Route, call_lists, layout_of, native_eligible  # noqa: F401 (the subclasses' imports)
from ._bucket_cache import BucketCache
from ._rule import Rule
from ._step_stats import DeviceAmp, device_amp

_STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16, "8bit")


def check_fusedopt_options(max_grad_norm, master_weights, state_dtype, max_grad_value=None, min_8bit_size=4096) -> None:
    _validate.check_positive_finite("max_grad_norm", max_grad_norm)
    _validate.check_positive_finite("max_grad_value", max_grad_value)
    if not isinstance(master_weights, bool):
        raise TypeError(f"master_weights must be a bool, got {type(master_weights).__name__}")
    if isinstance(state_dtype, str) and state_dtype != "8bit" or state_dtype not in _STATE_DTYPES:
        raise ValueError(
            f"Invalid state_dtype: {state_dtype!r} (use None, torch.float32, torch.bfloat16, torch.float16 or "
            "'8bit')"
        )
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) or min_8bit_size < 0:
        raise ValueError(f"Invalid min_8bit_size: {min_8bit_size!r} (an int >= 0)")


class FusedOptimizer(BucketingMixin, ParamStateMixin, CheckpointMixin, Optimizer):
    """Base of fusedopt's optimizers. Subclasses define the state and the op call."""

    # torch.amp.GradScaler hands us the scale and found_inf instead of unscaling
    # (for whom this is said, and why: _amp_flag.py).
    _step_supports_amp_scaling = AmpScalingFlag()

    def __init__(
        self, params, defaults, max_grad_norm=None, master_weights=False, state_dtype=None, norm_group=None,
        max_grad_value=None, min_8bit_size=4096, stochastic_rounding=False, seed=None,
    ):
        check_fusedopt_options(max_grad_norm, master_weights, state_dtype, max_grad_value, min_8bit_size)
        _stochastic_rounding.check_options(stochastic_rounding, master_weights, seed)
        _collectives.check_norm_group(norm_group)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.max_grad_value = None if max_grad_value is None else float(max_grad_value)
        # the ranks plain-tensor params' norm is global over (DTensors: their mesh)
        self.norm_group = norm_group
        self.master_weights = master_weights
        self.state_dtype = state_dtype
        # state_dtype="8bit": params with fewer elements keep float32 states
        self.min_8bit_size = min_8bit_size
        # bf16/fp16 params stored with stochastic rounding (_stochastic_rounding.py);
        # the seed of the params' generators: torch's, unless given
        self.stochastic_rounding = stochastic_rounding
        self.seed = torch.initial_seed() if seed is None else seed
        # What fusedopt's GradScaler hands a step and what a step leaves behind
        # (see last_grad_norm). A dict, not attributes: under torch.compile,
        # dynamo drops attribute stores on an Optimizer made inside the compiled
        # step (torch 2.13) or refuses them (2.11), but keeps a dict's updates.
        self._step_io: dict[str, Any] = {"last_grad_norm": None}
        # the per-group caches of buckets and their native plans (a copy or
        # an unpickled optimizer starts without any: CheckpointMixin.__setstate__)
        self._bucket_cache = BucketCache()
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
            stochastic_rounding=stochastic_rounding,
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

    # -- what subclasses declare ---------------------------------------------------

    # The update rule (fusedopt/optim/_rule.py): states, counter, hyperparameters.
    rule: Rule
    # whether torch's counterpart refuses fused=True on CUDA (its message says so)
    _fused_cuda_unsupported: bool = False
    # whether a state['step'] of -1 raises torch's ZeroDivisionError (Adam's
    # bias correction divides by 1 - beta**0; Adagrad's steps it normally)
    _step_minus_one_refused: bool = False

    def _check_group(self, group: dict, index: int) -> None:
        """Refuses hyperparameters the kernels cannot take (runs every step)."""

    def _torch_group_step(self, group: dict) -> None:
        """The group's step through torch's own implementation (differentiable=True)."""
        raise NotImplementedError

    def _hyper(self, group: dict, native: bool) -> tuple:
        """The group's packed hyperparameters; for an eager native op, as floats."""
        hyper = self.rule.hyper(group)
        if native and torch.compiler.is_compiling():
            # floats or tensors (Adam's tensor betas): _compile.hyper_args makes
            # them one float64 device tensor, never reading a tensor on the host
            return hyper
        return tuple(map(float, hyper)) if native else hyper

    def _ops_for_group(self, ops, group: dict):
        """The ops a native bucket of this group runs on (Adam: tensor betas
        that must stay on the device take the reference)."""
        return ops

    def _apply_bucket(self, ops, bucket: Bucket, group: dict, amp: DeviceAmp, device: torch.device) -> None:
        ops = self._ops_for_group(ops, group)
        native = ops is not _ops.reference
        hyper = self._hyper(group, native)
        hyper_tensor = None
        if native and torch.compiler.is_compiling():
            # betas, momentum...: device values, so a scheduler changing them
            # does not recompile (see _compile.hyper_args); eagerly the floats
            # go as they are (no tensor to make per step)
            hyper, hyper_tensor = _compile.hyper_args(hyper, device)
        lr, lr_tensor = _compile.lr_args(group["lr"], device, ops)
        maximize = bool(group.get("maximize", False))
        plan = bucket.native_plan
        tail = (lr, lr_tensor, amp.grad_scale, amp.found_inf, amp.sumsq, self.max_grad_norm or 0.0,
                self.max_grad_value or 0.0, maximize)
        if plan is not None and native:
            # made for this group's state lists: a change of them (amsgrad, momentum)
            # changes the group's signature, which rebuilds the cache and its plans
            plan.step_(hyper, hyper_tensor, *tail, binds=bucket.binds)
            return
        if plan is not None:
            plan.release()  # the grads it holds for this step: the list op or the reference updates
        keys = bucket.lists.get("rounding_keys")
        if keys:
            # stochastic rounding: each param's key and the global index of its first element
            offsets = [_stochastic_rounding.global_offset(p) for p in bucket.keys]
            self.rule.op(ops)(bucket.params, bucket.grads, *call_lists(bucket), hyper, hyper_tensor, *tail,
                              rounding_keys=keys, rounding_offsets=offsets)
            return
        self.rule.op(ops)(bucket.params, bucket.grads, *call_lists(bucket), hyper, hyper_tensor, *tail)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self.__dict__.pop("_param_index", None)
        self._forget_buckets()

    # -- the step --------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        for group in self.param_groups:
            if group.get("differentiable"):
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
        # nothing): each group's hyperparameters, then, while the buckets are built,
        # its tensors. any() stops at the first param with a grad.
        for index, group in enumerate(self.param_groups):
            if any(p.grad is not None for p in group["params"]):
                self._check_group(group, index)
                if self.stochastic_rounding:
                    _stochastic_rounding.check_param_dtypes(
                        type(self).__name__, [p for p in group["params"] if p.grad is not None]
                    )
        eager = not torch.compiler.is_compiling()
        if not eager:
            traced = [self._traced_buckets(group) for group in self.param_groups]
            if any(t is None for t in traced):
                return _compile.run_eagerly(self._fused_step, grad_scale, found_inf, find_infs=find_infs)
            work = [(group, t[0]) for group, t in zip(self.param_groups, traced)]
            # every group's reduction groups in the order of _reduce_groups, as names
            reduce_groups = []
            for _, groups in traced:
                reduce_groups += [rg for rg in groups if rg is not None and rg not in reduce_groups]
        else:
            state_same = self._state_unchanged()
            work = [(group, self._bucket_group(group, state_same, i)) for i, group in enumerate(self.param_groups)]
            # the cached buckets of groups deleted since the last step go, and all they hold
            dropped = self._bucket_cache.keep(len(work))
            if dropped:
                _masters.retire(self, dropped)
            if not state_same:
                self._snapshot_state()
        need_stats = self.max_grad_norm is not None or find_infs
        if not eager:
            return self._run_step(work, False, need_stats, grad_scale, found_inf, find_infs, reduce_groups)
        try:
            return self._run_step(work, True, need_stats, grad_scale, found_inf, find_infs)
        except _native_plan.Refit:
            # a reused plan refused this step's tensors before anything was
            # written: every group's buckets are built anew, validated in full
            self._forget_buckets()
            return self._fused_step(grad_scale, found_inf, find_infs=find_infs)

    def _run_step(self, work, eager: bool, need_stats: bool, grad_scale, found_inf, find_infs: bool,
                  reduce_groups: list | None = None):
        """The step over its buckets, once every Python-side check has passed.
        ``reduce_groups``: a compiled step's (else the bucket cache's)."""
        if eager:
            _plan_binds.bind_reused(
                work, need_stats, masters=self.master_weights, ops_for_group=self._ops_for_group,
                held=_idiom.take(self),
            )
            if self.master_weights:
                # every check has passed: masters of params written by others are re-seeded
                _masters.follow(work)
        # ranks that share params' norm or inf flags (sharded params, ZeRO): all
        # join the same collectives, even with no grad (or an empty shard) here
        groups = []
        if need_stats or found_inf is not None:
            groups = self._reduce_groups() if reduce_groups is None else reduce_groups
        if not groups and not any(buckets for _, buckets in work):
            return {} if find_infs else None

        amp, computed = device_amp(
            self, work, groups, grad_scale, found_inf, need_stats=need_stats, find_infs=find_infs
        )

        for group, buckets in work:
            for bucket in buckets.values():
                native = bucket.kind == "native"
                ops = _ops.ops_for(bucket.device) if native else _ops.reference
                self._apply_bucket(ops, bucket, group, amp[bucket.device], bucket.device)
                if native:
                    bump(bucket.written)  # the plain-torch paths' in-place ops bump their own
        if eager:
            # after every write of the step (a param listed twice is written twice)
            self._bucket_cache.record_steps()
            if self.master_weights:
                _masters.record(work)
            if len(self.state) != self._bucket_cache.snapshot_len():
                # the update made states (torch's own SGD, for sparse grads, does):
                # the snapshot must hold them, or a reset of them would go unseen
                self._snapshot_state()
        return computed

    def _reduce_groups(self) -> list:
        """The reduction groups of this optimizer's params, in the order every
        rank joins them (see fusedopt/_collectives.py); the bucket cache holds them."""
        norm = _collectives.of_norm_group(self.norm_group)
        cache = self._bucket_cache
        if self.max_grad_norm is not None and self.norm_group is None:
            if not cache.has_dtensor():
                _collectives.warn_local_norm_once(self)
        return _collectives.ordered_groups([norm] + cache.reduce_groups())

    def step_backends(self) -> dict[str, int]:
        """How many params each backend ("cuda", "cpu-native", "reference",
        "sparse") updated in the last step, read from the bucket cache."""
        return self._bucket_cache.backends()

