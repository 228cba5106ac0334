"""A run-time check that a compiled graph keeps for the reference path.

Dynamo guards an optimizer's grads only for being None or not (its rule for
every torch.optim.Optimizer, torch's included), and inductor's generated code
reads each input with the dtype it had when the graph was compiled. So a grad
whose dtype changes after compilation (a param's ``grad_dtype`` set to another
dtype) would be read as the old dtype by the reference path's compiled ops, a
silent wrong result. (The native ops check their arguments on every call and
raise; inductor's stride asserts catch a changed layout.) This op, kept in the
graph as a side effect, compares the grads' dtypes with the traced ones on
every call and raises instead. It costs one Python call per reference-path op
call, and only inside compiled graphs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _names(tensors: list[Tensor]) -> str:
    return ",".join(str(t.dtype) for t in tensors)


@torch.library.custom_op("fusedopt_checks::expect_dtypes", mutates_args=())
def _expect_dtypes(tensors: list[Tensor], dtypes: str) -> None:
    got = _names(tensors)
    if got != dtypes:
        raise RuntimeError(
            f"fusedopt: grads changed dtype after the step was compiled ({got}, compiled for {dtypes}); "
            "torch.compile does not guard an optimizer's grads, so keep their dtypes from step to step "
            "(or call torch._dynamo.reset() after changing them)"
        )


@_expect_dtypes.register_fake
def _(tensors: list[Tensor], dtypes: str) -> None:
    return None


# no output: without this, the graph's dead-code elimination would drop it
torch.fx.node.has_side_effect(torch.ops.fusedopt_checks.expect_dtypes.default)


def expect_traced_dtypes(grads: list[Tensor]) -> None:
    """Inside a compiled graph: a check, at every call, that `grads` still have
    the dtypes they were traced with. Eagerly: nothing."""
    if grads and torch.compiler.is_compiling():
        torch.ops.fusedopt_checks.expect_dtypes(grads, _names(grads))
