"""How one implementation's step is timed, and the bandwidth it is compared with.

CPU: wall time (perf_counter) of each call; the probe is an in-place add over
buffers far larger than the caches, measured every round next to the steps.

CUDA: CUDA events around each call, the L2 flushed before each one (a training
step finds the optimizer's tensors cold: forward and backward ran in between);
the probe is a device-to-device copy, measured once per run.

In both, `setup` (putting the scaled grads back) runs untimed before every
call, and a timer reports the median of its calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .summary import median

L2_FLUSH_BYTES = 256 << 20


class CpuTimer:
    device = "cpu"
    probe_every_round = True
    probe_about = "in-place add (a += b) on 256 MiB, read + read + write counted"

    def median_s(self, fn: Callable[[], None], reps: int, setup: Callable[[], None] | None = None) -> float:
        times = []
        for _ in range(reps):
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return median(times)

    def probe_gbs(self, nbytes: int = 256 << 20, reps: int = 10) -> float:
        """a += b has the optimizer's access pattern: in-place read-modify-write
        plus a read-only stream, so no write-allocate traffic (a STREAM copy's
        write-allocate reads would make it the lower, less fair reference)."""
        a = torch.ones(nbytes // 4)
        b = torch.ones_like(a)
        a.add_(b)
        return 3 * nbytes / self.median_s(lambda: a.add_(b), reps) / 1e9

    def sync(self) -> None:
        pass

    def release(self) -> None:
        pass


class CudaTimer:
    probe_every_round = False
    probe_about = "device-to-device copy of 1 GiB, read + write counted"

    def __init__(self, device: str = "cuda"):
        self.device = device
        self._flush = torch.empty(L2_FLUSH_BYTES // 4, device=device)

    def median_s(self, fn: Callable[[], None], reps: int, setup: Callable[[], None] | None = None) -> float:
        times = []
        for _ in range(reps):
            if setup is not None:
                setup()  # untimed, and before the flush, which evicts what it wrote
            self._flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return median(times)

    def probe_gbs(self, nbytes: int = 1 << 30, reps: int = 20) -> float:
        src = torch.empty(nbytes // 4, device=self.device)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        return 2 * nbytes / self.median_s(lambda: dst.copy_(src), reps) / 1e9

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def release(self) -> None:
        self.sync()
        torch.cuda.empty_cache()


def timer_for(device: str):
    return CpuTimer() if device == "cpu" else CudaTimer(device)
