"""Lists that hold the same tensor more than once.

torch processes a duplicate twice, in order (a param group listing tied
weights twice updates them twice; clip_grad_norm_([p, p]) scales p.grad twice).
A multi-tensor kernel given the same tensor twice would instead have two
threads read-modify-write the same elements at once. Splitting the list into
rounds in which each tensor appears once, run one after another, gives torch's
result deterministically.
"""

from __future__ import annotations

from torch import Tensor


def rounds(tensors: list[Tensor]) -> list[list[Tensor]]:
    """[tensors] when no tensor repeats (the common case, one C-level pass);
    otherwise round k holds the k-th occurrence of each tensor, in list order."""
    if len(set(map(id, tensors))) == len(tensors):
        return [tensors]
    out: list[list[Tensor]] = []
    seen: dict[int, int] = {}
    for t in tensors:
        k = seen.get(id(t), 0)
        seen[id(t)] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(t)
    return out
