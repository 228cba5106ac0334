"""The update rules in plain torch: the fallback where no native kernel serves a
tensor, and the oracle the tests compare the kernels with.

Each function has the signature and the semantics of the native op of the same
name (see csrc/ops.cpp), so callers can use either interchangeably:

* ``grad_scale`` is GradScaler's scale; grads are multiplied by its inverse
  (computed as torch does: ``scale.double().reciprocal().float()``).
* a nonzero ``found_inf`` skips the step: nothing is written, no step advances.
* ``max_value > 0`` clamps each unscaled grad to ``[-max_value, max_value]``,
  as clip_grad_value_ does after unscale_ in torch's idiom (``sumsq`` is then
  the sum of squares of the clamped grads, see grad_stats_);
* with ``sumsq`` given, grads are also multiplied by
  ``clamp(max_norm / (sqrt(sumsq) + 1e-6), max=1)``, as clip_grad_norm_ does.
* grads are read, never written (except by ``unscale_``, whose job that is).

The lists are split by device and dtype as torch's foreach optimizers split
theirs, and each group is updated with torch's multi-tensor ``_foreach_*`` ops
(per-tensor ATen ops for tensor subclasses; see _list_ops.py): one Python call
per operation and group, not per tensor.

Nothing here reads a device value on the host: the found_inf skip, a tensor
lr, the step counters and SGD's first-step flags are applied on the device
(``torch.where``, tensor arithmetic), so the functions are sync-free,
capturable in a CUDA graph, traceable by torch.compile, and run on the meta
device. With a found_inf, the update is computed on copies and written back
through ``torch.where(found_inf == 0, new, old)``: a skipped step leaves every
bit of every tensor as it was.

The arithmetic is torch.optim's single-tensor code (its default on the CPU),
operation by operation; on the CPU a ``_foreach_*`` op runs the single-tensor
kernel on each tensor, so the results are the same bits:

* Adam's bias corrections are computed on the device, for all of a group's
  step counters at once, in float64 with the operations Python applies to
  floats (``pow``, also for the square root: ATen turns ``tensor ** 0.5`` into
  ``sqrt``, which rounds differently from Python's ``x ** 0.5`` in about 1
  case in 400), so they are the doubles torch computes on the host (see
  _adam_scalars.py); a tensor lr is combined with them in its own dtype, as
  torch does.
* ``addcdiv_(.., value=s)`` with a per-tensor ``s``: on the CPU, the foreach
  op that reads the values from a CPU tensor; elsewhere (and traced)
  ``add_((t1 * s) / t2)``, the order in which ATen's kernel evaluates it.
  Adam's results are therefore torch's single-tensor results, bit for bit,
  for float32 and float64 tensors, float or tensor lr.
* ``adam_`` also takes ``beta1``/``beta2`` as 0-dim tensors: the native op
  takes floats, so tensor betas that must not be read on the host (any under
  torch.compile, CUDA ones in eager) are computed here.
* SGD with a float lr is torch's ``add_(grad, alpha=-lr)``; with a tensor lr it
  is ``addcmul_(grad, lr, value=-1)``, the device-side form torch itself uses
  for a tensor lr that requires grad (its default path reads the lr on the
  host and fuses the multiply-add, so the last bit may differ from that one).

Half-precision params or states are computed in float32 and rounded once at
the end, as torch's fused kernels do. Complex tensors are updated as their
real views, as torch does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _list_ops
from ._adam_scalars import adam_host_scalars, adam_step_scalars, per_tensor
from ._list_ops import FOREACH, by_device_and_dtype
from ._reference_lists import (
    LOW_PRECISION, prepared_grads, real, store, store_all, working_dtype, workings,
)
from ._traced_checks import expect_traced_dtypes

def _keep(found_inf: Tensor | None, device: torch.device) -> Tensor | None:
    """A 0-dim bool on `device`: True when the step is applied (found_inf == 0);
    None without a found_inf (always applied)."""
    if found_inf is None:
        return None
    return found_inf.reshape(()).to(device) == 0


def _inv_scale(grad_scale: Tensor) -> Tensor:
    """0-dim (GradScaler's scale has shape (1,))."""
    return grad_scale.reshape(()).double().reciprocal().float()


def _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value=0.0):
    """(inv_scale, clamp bound, norm clip coefficient, maximize), None where
    unused; the tensors 0-dim."""
    inv = _inv_scale(grad_scale) if grad_scale is not None else None
    clip = None
    if sumsq is not None:
        norm = sumsq.reshape(()).float().sqrt()
        clip = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return inv, (max_value if max_value > 0 else None), clip, maximize


def _clamped(g: Tensor, bound: float) -> Tensor:
    # clip_grad_value_ is clamp_min_(-c) then clamp_max_(c); complex grads are
    # clamped as their real view (torch's clamp refuses complex tensors)
    if g.is_complex():
        return torch.view_as_complex(torch.view_as_real(g).clamp(-bound, bound))
    return g.clamp(-bound, bound)


def _on_cpu_eagerly(device: torch.device) -> bool:
    return device.type == "cpu" and not torch.compiler.is_compiling()


# -- Adam ---------------------------------------------------------------------------------


def adam_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    master_params: list[Tensor],
    lr: float,
    lr_tensor: Tensor | None,
    beta1: float | Tensor,
    beta2: float | Tensor,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    amsgrad: bool,
    maximize: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    sumsq: Tensor | None,
    max_norm: float,
    max_value: float = 0.0,
) -> None:
    if not params:
        return
    expect_traced_dtypes(grads)
    factors = _grad_factors(grad_scale, sumsq, max_norm, maximize, max_value)
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [], steps, master_params]
    for device, group in by_device_and_dtype(lists):
        _adam_group(
            device, *group, keep=_keep(found_inf, device), factors=factors, lr=lr,
            lr_tensor=None if lr_tensor is None else lr_tensor.to(device), beta1=beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay, decoupled=decoupled, amsgrad=amsgrad,
        )


def _adam_group(
    device, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, masters, *,
    keep, factors, lr, lr_tensor, beta1, beta2, eps, weight_decay, decoupled, amsgrad,
) -> None:
    """One device and dtype: torch's multi-tensor Adam, with the per-tensor
    scalars computed on the device (see the module docstring)."""
    ops = _list_ops.ops_for(params, grads)
    _advance_steps(ops, steps, keep)
    dtype = working_dtype(torch.view_as_real(params[0]) if params[0].is_complex() else (masters or params)[0])
    cpu_scalars = _on_cpu_eagerly(device) and ops is FOREACH
    if cpu_scalars and lr_tensor is None and not isinstance(beta1, Tensor) and not isinstance(beta2, Tensor):
        # Python numbers, as torch computes them: the counters are in host memory
        # (no sync), and a list of numbers is far cheaper than a tensor per tensor
        bc2_sqrt, step_sizes = adam_host_scalars(steps, beta1, beta2, lr)
    else:
        bias_correction2_sqrt, neg_step_size = adam_step_scalars(steps, beta1, beta2, lr, lr_tensor, device)
        if cpu_scalars:
            # the numbers rounded to the dtype of the tensors they scale (the
            # cast a mixed-dtype op makes)
            bc2_sqrt, step_sizes = bias_correction2_sqrt.to(dtype).tolist(), neg_step_size.tolist()
        else:
            # one 0-dim tensor per tensor, on the device
            bc2_sqrt, step_sizes = per_tensor(bias_correction2_sqrt, dtype), per_tensor(neg_step_size, dtype)
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters)
    for lo, hi, piece in _batches(ops, device, lists):
        _adam_batch(
            ops, device, dtype, *(_take(lst, lo, hi, piece) for lst in lists), bc2_sqrt[lo:hi], step_sizes[lo:hi],
            cpu_scalars, keep=keep, factors=factors, lr=lr, lr_tensor=lr_tensor, beta1=beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay, decoupled=decoupled, amsgrad=amsgrad,
        )


def _adam_batch(
    ops, device, dtype, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, bc2_sqrt, step_sizes,
    cpu_scalars, *, keep, factors, lr, lr_tensor, beta1, beta2, eps, weight_decay, decoupled, amsgrad,
) -> None:
    # complex tensors as their real views, as torch does (its L2 decay excepted, below)
    is_complex = params[0].is_complex()
    stored = [real(lst) if is_complex else lst for lst in (masters or params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)]
    work, copied = workings(stored, dtype, keep)
    p, m, v, vmax = work
    g, own = prepared_grads(ops, grads, params[0].dtype if is_complex else dtype, factors, device)

    if weight_decay != 0:
        if not decoupled:
            # torch adds a complex param to its complex grad before viewing both as real
            pw = [torch.view_as_complex(x) for x in p] if is_complex else p
            if own:
                ops.add_(g, pw, alpha=weight_decay)
            else:
                g = ops.add(g, pw, alpha=weight_decay)
        elif lr_tensor is None:
            ops.mul_scalar_(p, 1 - lr * weight_decay)
        else:
            ops.mul_tensor_(p, (1 - lr_tensor * weight_decay).to(dtype))

    if is_complex:
        g = real(g)
    # tensor betas (the compiled step's route for them) stay on the device
    if isinstance(beta1, Tensor):
        ops.lerp_(m, g, [1 - beta1.to(device, dtype)] * len(m))
    else:
        ops.lerp_scalar_(m, g, 1 - beta1)
    if isinstance(beta2, Tensor):
        b2 = beta2.to(device, dtype)
        ops.mul_tensor_(v, b2)
        # addcmul_'s value must be a number: (value * t1) * t2 is ((1 - b2) * g) * g
        ops.addcmul_(v, ops.mul_tensor(g, 1 - b2), g, value=1)
    else:
        ops.mul_scalar_(v, beta2)
        ops.addcmul_(v, g, g, value=1 - beta2)
    del g

    if amsgrad:
        ops.maximum_(vmax, v)
    denom = ops.sqrt(vmax if amsgrad else v)
    if cpu_scalars:
        FOREACH.div_scalars_(denom, bc2_sqrt)
    else:
        ops.div_(denom, bc2_sqrt)
    ops.add_scalar_(denom, eps)
    if cpu_scalars:
        FOREACH.addcdiv_scalars_(p, m, denom, step_sizes)
    else:
        # p.addcdiv_(m, denom, value=-step_size), evaluated as ATen does: p + (value * m) / denom
        update = ops.mul(m, step_sizes)
        ops.div_(update, denom)
        ops.add_(p, update)
    del denom

    store_all(ops, stored, work, copied, keep)
    if masters:
        store(ops, params, masters, keep)


# Elements per batch of an eager CPU update, per intra-op thread: its
# temporaries (sqrt(v), grads made here) and the states it streams stay in the
# caches from one operation to the next, and the temporaries are reused from
# the heap step after step rather than mapped, faulted in and unmapped as
# torch's model-sized ones are. Larger tensors are updated in pieces (a
# multiple of every SIMD width, so each piece runs ATen's kernels as the whole
# would). Per thread: ATen splits each operation among its threads, so this is
# what each thread's caches hold, and more threads make fewer, larger batches,
# hence no more of the parallel regions (each ending at a barrier, costly
# where the cores are shared) than torch's per-tensor operations have.
BATCH_ELEMENTS = 1 << 18


def _batches(ops, device, lists) -> list[tuple[int, int, slice | None]]:
    """The update's batches, (lo, hi, piece): the tensors lo:hi whole, about
    BATCH_ELEMENTS elements together, or (piece not None) a slice of the flat
    view of tensor lo, on the CPU eagerly; else one batch of every tensor (a
    CUDA foreach op is one launch per list; traced, inductor fuses). A tensor
    is cut into pieces only where all its tensors are contiguous (their flat
    views then line up element by element)."""
    params = lists[0]
    n = len(params)
    if not (_on_cpu_eagerly(device) and ops is FOREACH):
        return [(0, n, None)]
    size = BATCH_ELEMENTS * torch.get_num_threads()
    out, lo, filled = [], 0, 0
    for i, t in enumerate(params):
        numel = t.numel()
        if numel > size and all(lst[i].is_contiguous() for lst in lists if len(lst)):
            if lo < i:
                out.append((lo, i, None))
            out.extend((i, i + 1, slice(a, min(a + size, numel))) for a in range(0, numel, size))
            lo, filled = i + 1, 0
            continue
        filled += numel
        if filled >= size:
            out.append((lo, i + 1, None))
            lo, filled = i + 1, 0
    if lo < n:
        out.append((lo, n, None))
    return out


def _take(tensors, lo: int, hi: int, piece: slice | None):
    """A list's tensors in one batch (the list itself when that is all of it)."""
    if piece is not None:
        return [tensors[lo].view(-1)[piece]] if len(tensors) else tensors
    return tensors if lo == 0 and hi == len(tensors) else tensors[lo:hi]


def _advance_steps(ops, steps: list[Tensor], keep: Tensor | None) -> None:
    if keep is None:
        if steps[0].device.type == "cpu" and not torch.compiler.is_compiling():
            # as torch does: one tensor 1, not a scalar wrapped again for every step tensor
            ops.add_tensor_(steps, torch.ones((), dtype=steps[0].dtype), alpha=1.0)
        else:
            ops.add_scalar_(steps, 1)
    elif keep.device == steps[0].device:
        ops.add_tensor_(steps, keep.to(steps[0].dtype))
    else:
        # meta params keep their step counters on the CPU
        for s in steps:
            s.add_(keep.to(s.dtype))


# -- grad statistics and GradScaler's ops -------------------------------------------------


def grad_stats_(
    grads: list[Tensor],
    grad_scale: Tensor | None,
    found_inf: Tensor,
    sumsq: Tensor,
    max_value: float = 0.0,
) -> None:
    """found_inf := 1 if any grad holds inf/nan; sumsq += sum(clamp(g * inv_scale)^2),
    the clamp to [-max_value, max_value] only when max_value > 0. The inf check
    looks at the grads themselves, before any clamp. The sum is taken in float64
    (per tensor as the square of its float64 2-norm) and added in float32."""
    if not grads:
        return
    expect_traced_dtypes(grads)
    # a sparse grad (torch's SGD and Adagrad take them) as its coalesced values:
    # the same elements, duplicates summed, and the same norm
    grads = [g.coalesce().values() if g.is_sparse else g for g in grads]
    inv = _inv_scale(grad_scale) if grad_scale is not None else None
    total = torch.zeros((), dtype=torch.float64, device=sumsq.device)
    bad = torch.zeros((), dtype=torch.bool, device=sumsq.device)
    for device, (gs,) in by_device_and_dtype([grads]):
        ops = _list_ops.ops_for(gs)
        xs = real(gs)
        if xs[0].dtype in LOW_PRECISION:
            xs = [x.float() for x in xs]
        if max_value > 0:
            bad |= _any_nonfinite(ops, xs).to(bad.device)
        if inv is not None:
            xs = ops.mul_tensor(xs, inv.to(device, xs[0].dtype))
        if max_value > 0:
            xs = ops.clamp_min(xs, -max_value)
            ops.clamp_max_(xs, max_value)
        norms = torch.stack(ops.norm(xs, 2, dtype=torch.float64))
        total += norms.square().sum().to(total.device)
    sumsq.add_(total.to(sumsq.dtype))
    bad |= ~torch.isfinite(total)
    found_inf.copy_(torch.where(bad, torch.ones_like(found_inf), found_inf))


def _any_nonfinite(ops, tensors: list[Tensor]) -> Tensor:
    """A 0-dim bool: whether any element is inf or nan (the max-norm is then inf
    or nan: it propagates both, and is exact; an empty tensor has none)."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return torch.zeros((), dtype=torch.bool)
    return ~torch.isfinite(torch.stack(ops.norm(tensors, float("inf")))).all()


def unscale_(grads: list[Tensor], found_inf: Tensor, inv_scale: Tensor) -> None:
    """GradScaler.unscale_: grads *= inv_scale; found_inf := 1 on any inf/nan."""
    for device, (gs,) in by_device_and_dtype([grads]):
        ops = _list_ops.ops_for(gs)
        bad = _any_nonfinite(ops, gs).to(found_inf.device)
        found_inf.copy_(torch.where(bad, torch.ones_like(found_inf), found_inf))
        # the float32 factor itself: a half-precision grad is multiplied in float32 and rounded once
        ops.mul_tensor_(gs, inv_scale.reshape(()).to(device))


def clip_value_(grads: list[Tensor], clip_value: float) -> None:
    """clip_grad_value_: grads := clamp(grads, -clip_value, clip_value), as torch does."""
    for _, (gs,) in by_device_and_dtype([grads]):
        ops = _list_ops.ops_for(gs)
        ops.clamp_min_(gs, -clip_value)
        ops.clamp_max_(gs, clip_value)
