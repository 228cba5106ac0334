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


def bump(tensors: list[Tensor]) -> None:
    if tensors:
        increment_version(tensors)
