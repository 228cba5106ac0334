"""Native plans: a bucket's lists kept in a native library between steps.

A rule's list op (``adam_``, ``sgd_``, ...) takes 5 lists of tensors and validates each
on every call; across the dispatcher and the stable ABI that costs about as
much per tensor as torch's whole fused step. A plan is made once from a
bucket's lists (validated as the list op validates them); each eager step then
hands over only its grads: ``bind`` checks them, and cheaply re-checks what the
plan holds, then the stats pass and the update run over tables the plan keeps.
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

    __slots__ = ("id", "anchor")

    def __init__(self, plan_id: int, device: torch.device) -> None:
        self.id = plan_id
        self.anchor = _anchor(device)

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

    def grad_stats_(self, grad_scale, found_inf, sumsq, max_value: float) -> None:
        _ops.PLANS.plan_grad_stats_(self.id, grad_scale, found_inf, sumsq, max_value)

    def step_(self, hyper, hyper_tensor, lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value,
              maximize) -> None:
        """The rule's list op over the lists the plan holds (its arguments after master_params)."""
        _ops.PLANS.plan_step_(self.anchor, self.id, hyper, hyper_tensor, lr, lr_tensor, grad_scale, found_inf,
                              sumsq, max_norm, max_value, maximize)

    def release(self) -> None:
        """Lets go of the bound grads: for a step whose update goes elsewhere
        (the update through the plan releases them itself)."""
        _ops.PLANS.plan_release(self.anchor, self.id)

    def __del__(self) -> None:
        try:
            _ops.PLANS.plan_free(self.anchor, self.id)
        except Exception:  # noqa: BLE001 - interpreter shutdown: the registry outlives us
            pass


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
