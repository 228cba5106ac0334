"""The list operations the plain-torch fallback (reference.py) is written in,
and the grouping of its lists by device and dtype.

Two implementations of one set of operations:

* ``FOREACH``: torch's multi-tensor ``_foreach_*`` ops, one call per list.
  On the CPU each runs the single-tensor ATen kernel on every tensor in turn,
  from C++; on CUDA, multi-tensor kernels. So on the CPU a step written in
  these gives, bit for bit, what the single-tensor ops give, at a fraction of
  the Python cost.
* ``LOOP``: the same ATen ops, one call per tensor, for tensor subclasses
  (other than Parameter). torch's own optimizers take the single-tensor path
  for those too: a subclass that dispatches its own ops need not implement
  the foreach ones.

Both call ATen's overloads themselves (``torch.ops.aten.X.overload``), not the
``torch._foreach_*`` functions or Tensor methods: dynamo rewrites some of those
when tracing (``_foreach_lerp_`` into a sub and an addcmul, ``addcmul_`` with a
value into a mul and an fma), which round differently, and a compiled step
must compute what the eager one does.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

aten = torch.ops.aten

FOREACH = SimpleNamespace(
    add_scalar_=aten._foreach_add_.Scalar,
    add_tensor_=aten._foreach_add_.Tensor,  # one 0-dim tensor for every tensor of the list
    add_=aten._foreach_add_.List,
    add=aten._foreach_add.List,
    mul_scalar_=aten._foreach_mul_.Scalar,
    mul_scalar=aten._foreach_mul.Scalar,
    mul_tensor_=aten._foreach_mul_.Tensor,
    mul_tensor=aten._foreach_mul.Tensor,
    mul_=aten._foreach_mul_.List,
    mul=aten._foreach_mul.List,
    div_=aten._foreach_div_.List,
    lerp_scalar_=aten._foreach_lerp_.Scalar,
    lerp_=aten._foreach_lerp_.List,
    addcmul_=aten._foreach_addcmul_.Scalar,
    # per-tensor values as Python numbers or read from a 1-D CPU tensor (FOREACH only)
    div_scalars_=aten._foreach_div_.ScalarList,
    addcdiv_scalars_=aten._foreach_addcdiv_.ScalarList,
    sqrt=aten._foreach_sqrt.default,
    maximum_=aten._foreach_maximum_.List,
    neg=aten._foreach_neg.default,
    neg_=aten._foreach_neg_.default,
    clamp_min=aten._foreach_clamp_min.Scalar,
    clamp_min_=aten._foreach_clamp_min_.Scalar,
    clamp_max_=aten._foreach_clamp_max_.Scalar,
    copy_=aten._foreach_copy_.default,
    zero_=aten._foreach_zero_.default,
    norm=aten._foreach_norm.Scalar,
)


def _each(op):
    """A list op from a single-tensor op: op(x, *rest) for each x, with each
    list argument taken element by element and any other argument as it is."""

    def run(xs, *args, **kwargs):
        lists = [i for i, a in enumerate(args) if isinstance(a, (list, tuple))]
        out = []
        for k, x in enumerate(xs):
            call = [a[k] if i in lists else a for i, a in enumerate(args)]
            out.append(op(x, *call, **kwargs))
        return out

    return run


def _each_(op):
    run = _each(op)

    def run_(xs, *args, **kwargs):
        run(xs, *args, **kwargs)

    return run_


LOOP = SimpleNamespace(
    add_scalar_=_each_(aten.add_.Scalar),
    add_tensor_=_each_(aten.add_.Tensor),
    add_=_each_(aten.add_.Tensor),
    add=_each(aten.add.Tensor),
    mul_scalar_=_each_(aten.mul_.Scalar),
    mul_scalar=_each(aten.mul.Scalar),
    mul_tensor_=_each_(aten.mul_.Tensor),
    mul_tensor=_each(aten.mul.Tensor),
    mul_=_each_(aten.mul_.Tensor),
    mul=_each(aten.mul.Tensor),
    div_=_each_(aten.div_.Tensor),
    lerp_scalar_=_each_(aten.lerp_.Scalar),
    lerp_=_each_(aten.lerp_.Tensor),
    addcmul_=_each_(aten.addcmul_.default),
    sqrt=_each(aten.sqrt.default),
    maximum_=_each_(lambda x, y: aten.maximum.out(x, y, out=x)),
    neg=_each(aten.neg.default),
    neg_=_each_(aten.neg_.default),
    clamp_min=_each(aten.clamp_min.default),
    clamp_min_=_each_(aten.clamp_min_.default),
    clamp_max_=_each_(aten.clamp_max_.default),
    copy_=_each_(aten.copy_.default),
    zero_=_each_(aten.zero_.default),
    norm=_each(lambda x, ord, dtype=None: aten.linalg_vector_norm.default(x, ord, dtype=dtype)),
)

_PLAIN = (Tensor, torch.nn.Parameter)


def ops_for(*lists: list[Tensor]) -> SimpleNamespace:
    """FOREACH for plain tensors, LOOP where any tensor is a subclass."""
    for lst in lists:
        for t in lst:
            if type(t) not in _PLAIN:
                return LOOP
    return FOREACH


def by_device_and_dtype(lists: list[list[Tensor]]) -> list[tuple[torch.device, list[list[Tensor]]]]:
    """The lists split into groups of one device and one dtype of the first
    list's tensors, as torch's foreach optimizers group theirs; the other lists
    follow by index (empty ones stay empty): [(device, lists)]. Only the first
    list goes to torch's grouping, whose checks of the others (dtypes that may
    differ from the param's) vary between torch versions."""
    first = lists[0]
    if not first:
        return []
    if not torch.compiler.is_compiling():
        from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

        keyed = [(device, index) for (device, _), (_, index) in
                 _group_tensors_by_device_and_dtype([first], with_indices=True).items()]
    else:
        # traced: the same grouping in Python (devices and dtypes are static in a graph)
        found: dict[tuple, list[int]] = {}
        for i, t in enumerate(first):
            found.setdefault((t.device, t.dtype), []).append(i)
        keyed = [(device, index) for (device, _), index in found.items()]
    if len(keyed) == 1:
        return [(keyed[0][0], lists)]
    return [(device, [[lst[i] for i in index] if lst else lst for lst in lists]) for device, index in keyed]
