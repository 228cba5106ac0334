"""Native plans: a bucket's lists kept in a native library between steps.

A rule's list op (``adam_``, ``sgd_``, ...) takes 5 lists of tensors and validates each
on every call; across the dispatcher and the stable ABI that costs about as
much per tensor as torch's whole fused step. A plan is made once from a
bucket's lists (validated as the list op validates them); each eager step then
hands over only its grads: a bind checks them, and cheaply re-checks what the
plan holds, then the stats pass and the update run over tables the plan keeps.
The binds of a step's reused plans go with the op that runs first (its stats
pass or its first update: PendingBinds), which checks them all before it
writes anything, so a step without a stats pass crosses the dispatcher once
per bucket.
The bucket cache (optim/_bucket_cache.py) owns each native plan through its bucket
and frees it with the bucket.

Both native libraries serve plans (csrc/plan_ops_common.h; on CUDA the plan
keeps the launch pointers and a step refreshes only the grads'), and only
eager steps use them: under torch.compile (and in opcheck) the list ops, whose
schemas name every tensor they write, are what is traced.
FUSEDOPT_DISABLE_PLANS=1 sends every step through the list ops (for measuring
the difference, or to rule plans out).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from . import _ops

ENABLED = os.environ.get("FUSEDOPT_DISABLE_PLANS", "") in ("", "0")
# Whether a step's binds go with its first op (else each plan binds on its own
# call first, one more dispatcher crossing per bucket): off only to measure that
FOLD_BINDS = True

# What the plan ops dispatch on (they take no list that says where they run):
# an empty tensor on the plan's device, whatever happens to the params since.
_ANCHORS: dict[torch.device, Tensor] = {}


def _anchor(device: torch.device) -> Tensor:
    anchor = _ANCHORS.get(device)
    if anchor is None:
        anchor = _ANCHORS[device] = torch.empty(0, device=device)
    return anchor


def available(device: torch.device) -> bool:
    """Whether steps on ``device`` can use native plans."""
    return ENABLED and _ops.backend(device) in ("cpu-native", "cuda")


class NativePlan:
    """The Python handle of one native plan (csrc/plan_ops_common.h); the
    plan is freed when the last reference to the handle goes. It is made with
    its first step's grads bound; a later step binds its own (``bind``), and the
    update (``step_``) releases them."""

    __slots__ = ("id", "anchor", "library")

    def __init__(self, plan_id: int, device: torch.device) -> None:
        self.id = plan_id
        self.anchor = _anchor(device)
        self.library = device.type  # the native library that holds it

    def bind(self, grads: list[Tensor]) -> bool:
        """This step's grads; False: the plan no longer fits them or the
        tensors it holds (the caller makes a new one)."""
        try:
            return _ops.PLANS.plan_bind(grads, self.id)
        except NotImplementedError:
            # The dispatcher found no kernel for these grads: a layout no plan
            # takes (a grad that turned sparse, say). The caller's new plan
            # routes them where they belong, or refuses them as torch does.
            return False

    def grad_stats_(self, grad_scale, found_inf, sumsq, max_value: float, binds=None) -> None:
        """grad_stats_ over the bound grads; with ``binds`` (PendingBinds), binds those first."""
        args = (self.id, grad_scale, found_inf, sumsq, max_value)
        if binds is None:
            _ops.PLANS.plan_grad_stats_(*args)
        else:
            run_binding(_ops.PLANS.plan_grad_stats_, args, binds)

    def step_(self, hyper, hyper_tensor, lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value,
              maximize, binds=None) -> None:
        """The rule's list op over the lists the plan holds (its arguments after
        master_params); with ``binds`` (PendingBinds), binds those first."""
        args = (self.anchor, self.id, hyper, hyper_tensor, lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm,
                max_value, maximize)
        if binds is None:
            _ops.PLANS.plan_step_(*args)
        else:
            run_binding(_ops.PLANS.plan_step_, args, binds)

    def unscale_(self, found_inf, inv_scale, binds=None) -> None:
        """unscale_ over the bound grads (grads *= inv_scale, found_inf := 1 on
        any inf/nan), which stay bound; with ``binds`` (PendingBinds or
        PendingRechecks), takes those first (torch's AMP idiom: optim/_idiom.py)."""
        args = (self.id, found_inf, inv_scale)
        if binds is None:
            _ops.PLANS.plan_unscale_(*args)
        else:
            run_binding(_ops.PLANS.plan_unscale_, args, binds)

    def release(self) -> None:
        """Lets go of the bound grads: for a step whose update goes elsewhere
        (the update through the plan releases them itself)."""
        _ops.PLANS.plan_release(self.anchor, self.id)

    def __del__(self) -> None:
        try:
            _ops.PLANS.plan_free(self.anchor, self.id)
        except Exception:  # noqa: BLE001 - interpreter shutdown: the registry outlives us
            pass


class Refit(Exception):
    """A reused plan does not fit this step's tensors, as the op that runs
    first in the step found before it wrote anything: the step rebuilds its
    buckets (validated in full: a real problem is named) and runs again."""


class PendingBinds:
    """The grads of a step's reused plans, for the op that runs first
    (csrc/plan_ops_common.h, bind_each): it binds and checks every one of them
    before it writes anything. Handed over once; the ops after it bind nothing."""

    __slots__ = ("grads", "ids")

    def __init__(self, buckets) -> None:
        grads = []
        for b in buckets:
            grads += b.grads  # C speed: a comprehension costs ~0.03 us per grad
        self.grads = grads
        self.ids = [b.native_plan.id for b in buckets]

    def take(self) -> tuple:
        taken = (self.grads, self.ids)
        self.grads, self.ids = None, []
        return taken


class PendingRechecks(PendingBinds):
    """Plans that still hold this step's grads, bound by an earlier call of the
    step (torch's AMP idiom: scaler.unscale_ bound them, see optim/_idiom.py):
    the op that runs first re-checks what each holds (csrc/plan_bound_ops.h)
    instead of taking the grads across the dispatcher again. The caller has
    checked that every param's .grad is still the tensor bound."""

    __slots__ = ()

    def __init__(self, plans) -> None:
        self.grads = None
        self.ids = [p.id for p in plans]


def run_binding(op, args: tuple, binds: PendingBinds) -> bool:
    """``op`` (plan_grad_stats_, plan_step_ or plan_unscale_) with the pending
    binds; Refit where a plan does not fit them (the op wrote nothing then)."""
    grads, ids = binds.take()
    try:
        fits = op(*args, grads, ids)
    except NotImplementedError:
        # no kernel for these grads (one turned sparse, say): as in bind
        fits = False
    if not fits:
        raise Refit
    return True


def make(rule_name: str, params: list[Tensor], grads: list[Tensor], states: list[Tensor], counters: list[Tensor],
         masters: list[Tensor], hyper, rounding_keys: list[Tensor] | None = None,
         rounding_offsets: list[int] | None = None) -> NativePlan:
    """A plan of a rule's lists (validated as its list op validates them), with
    these grads bound; with rounding keys and offsets, it stores the params
    with stochastic rounding."""
    maker = _ops.plan_maker(rule_name)
    if rounding_keys:
        made = maker(params, grads, states, counters, masters, hyper, rounding_keys, rounding_offsets)
    else:
        made = maker(params, grads, states, counters, masters, hyper)
    return NativePlan(made, params[0].device)
