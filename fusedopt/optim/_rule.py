"""The optimizer descriptor: what a fusedopt optimizer class declares about its
update rule. The base class (_base.FusedOptimizer) does everything else with
it: state creation, bucketing, routing, native plans, AMP, checkpoints, the
compiled route.

A rule named ``x`` has a native list op ``torch.ops.fusedopt.x_`` and a plan
maker ``x_plan_make`` (csrc/rules/x.h, registered in csrc/rules/registry.h),
and a plain-torch ``reference`` function with the list op's signature::

    x_(params, grads, states, counters, master_params, hyper, hyper_tensor,
       lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value=0.,
       maximize=False)

where ``states`` is the active state lists concatenated (state k of param i at
``k * len(params) + i``) and ``hyper`` the packed hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Rule:
    name: str
    # state keys, in the rule's order (the kernels' s[0], s[1], ...)
    states: tuple[str, ...]
    # the state key of the per-param float32 step counter, or None
    counter: str | None
    # how many of ``states`` a group's step uses (the first ones)
    active: Callable[[dict], int]
    # the group's packed hyperparameters, in the native Hyper's order (floats,
    # or 0-dim tensors where only the reference takes them)
    hyper: Callable[[dict], tuple]
    # the plain-torch implementation, with the list op's signature
    reference: Callable
    # per state: whether its 8-bit form uses the signed map (moments, momentum)
    # or the unsigned one (squares: exp_avg_sq, Adagrad's sum); see _quant8.py
    signed: tuple[bool, ...]
    # states a group setting may switch on after the others exist (Adam's
    # max_exp_avg_sq with amsgrad): made from zero then, like torch
    optional: tuple[str, ...] = ()

    def op(self, ops):
        """The list op of this rule in ``ops`` (a native library's namespace),
        or the reference function for the plain-torch backend (which also
        takes 8-bit states: fusedopt/_reference_quant8.py)."""
        from .. import _ops, _reference_quant8
        from . import _stochastic_rounding

        if ops is _ops.reference:
            return _stochastic_rounding.with_rounding(_reference_quant8.with_8bit(self.reference, self.signed))
        return getattr(ops, self.name + "_")
