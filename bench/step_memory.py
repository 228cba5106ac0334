"""The memory a training step needs on the CPU, from the profiler's record of
every allocation torch makes (the CPU has no torch.cuda.max_memory_allocated).

`measure(params, opt, step_fn)` runs one step under the profiler with memory
profiling on and returns:
- resident_bytes: what lives across steps before it: the params (and their
  grads, where set), and every tensor the optimizer keeps;
- step_peak_bytes: resident_bytes plus the highest level of the step's own
  allocations above where it started (activations, grads, the optimizer's
  temporaries): the peak memory of a training step;
- optimizer_peak_bytes: the same peak within the optimizer's step alone, above
  where it started: the temporaries the optimizer allocates.

Allocations made outside torch's allocator (a native library's own small
buffers) are not seen; fusedopt's kernels keep theirs per thread and small.
"""

from __future__ import annotations

from typing import Callable

import torch

_OPT_MARK = "bench.optimizer_step"


def tensor_bytes(t) -> int:
    """A tensor's bytes; a tensor subclass (torchao's 8-bit states) by its inner tensors."""
    if not isinstance(t, torch.Tensor):
        return 0
    if hasattr(t, "__tensor_flatten__") and type(t) is not torch.Tensor:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps in its state."""
    return sum(tensor_bytes(v) for st in opt.state.values() for v in st.values())


def _allocations(prof) -> list[tuple[int, int]]:
    """(time ns, +bytes allocated / -bytes freed) of every CPU allocation, in order."""
    from torch._C._profiler import _EventType

    out: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            out.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    return sorted(out)


def _mark_range(prof, name: str) -> tuple[int, int] | None:
    from torch._C._profiler import _EventType

    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.TorchOp and node.name == name:
            return node.start_time_ns, node.end_time_ns
        stack.extend(node.children)
    return None


def _peak(allocs: list[tuple[int, int]], start: int = -1, end: int | None = None) -> int:
    level = peak = 0
    for t, size in allocs:
        if t < start or (end is not None and t > end):
            continue
        level += size
        peak = max(peak, level)
    return peak


def optimizer_step(opt: torch.optim.Optimizer) -> None:
    """opt.step() inside the range `measure` reads the optimizer's own peak from."""
    with torch.profiler.record_function(_OPT_MARK):
        opt.step()


def measure(params: list[torch.Tensor], opt: torch.optim.Optimizer, step_fn: Callable[[], None]) -> dict:
    """Run step_fn (forward, backward, `optimizer_step(opt)`, zero_grad) once
    under the profiler; the optimizer's state must exist already (a step ran)."""
    from torch.profiler import ProfilerActivity, profile

    resident = sum(tensor_bytes(p) + tensor_bytes(p.grad) for p in params) + optimizer_bytes(opt)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        step_fn()
    allocs = _allocations(prof)
    window = _mark_range(prof, _OPT_MARK)
    if window is None:
        raise RuntimeError("step_fn did not call step_memory.optimizer_step(opt)")
    return {"resident_bytes": resident, "step_peak_bytes": resident + _peak(allocs),
            "optimizer_peak_bytes": _peak(allocs, *window)}
