"""Autograd version counters of the tensors the native kernels write.

An in-place torch op bumps the version counter of every tensor it writes, which
is how autograd refuses to back-propagate through a graph that saved a tensor
since modified ("... modified by an inplace operation"). The native kernels
write through raw pointers, outside the dispatcher's bookkeeping, so their
callers bump the counters themselves: one call for a whole list (a C++ loop,
no Python per tensor). Under torch.compile the call traces to nothing, and the
compiled graph's own write-back of the mutated inputs bumps them.
"""

from __future__ import annotations

from torch import Tensor
from torch.autograd.graph import increment_version

from . import _bulk


def bump(tensors: list[Tensor]) -> None:
    if tensors:
        increment_version(tensors)


def versions(tensors: list[Tensor]) -> list[int] | None:
    """Each tensor's version counter (one C loop), to tell later whether anyone
    wrote it in place since; None when one is an inference tensor (made under
    torch.inference_mode(): it has no counter, and cannot be written outside
    that mode)."""
    try:
        return _bulk.attrs(tensors, "_version")
    except RuntimeError:
        return None
