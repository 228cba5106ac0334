"""The whole AMP + clip + AdamW step on a GPU, as users run it.

Timed: unscale + inf check + clip-by-global-norm(1.0) + update + scale update.
Not timed: the backward pass (grads are prepared once, scaled by 2^16), putting
them back before every repetition, and an L2 flush after that.

Pipelines: see amp_pipelines.py.

Bandwidth is reported on the floor bytes of the step (32 B per fp32 param:
the stats pass reads g, the update reads p, g, m, v and writes p, m, v), for
every pipeline alike, and as a percentage of a device-to-device copy measured
in the same run.
"""

from __future__ import annotations

import sys

import torch

import fusedopt

from .amp_pipelines import PIPELINES, SCALE, make
from .summary import summarize
from .workloads import Workload

FLOOR_BYTES_PER_PARAM = 32
L2_FLUSH_BYTES = 256 << 20


def _time_ms(fn, reps: int, flush: torch.Tensor, setup=None) -> list[float]:
    out = []
    for _ in range(reps):
        if setup is not None:
            setup()  # untimed, and before the flush, which evicts what it wrote
        flush.zero_()  # evict the L2 between repetitions
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def copy_bandwidth_gbs(nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy, counting read + write bytes."""
    src = torch.empty(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    flush = torch.empty(L2_FLUSH_BYTES // 4, device="cuda")
    for _ in range(3):
        dst.copy_(src)
    times = sorted(_time_ms(lambda: dst.copy_(src), reps, flush))
    return 2 * nbytes / (times[len(times) // 2] / 1e3) / 1e9


def run(workloads: list[Workload], rounds: int = 5, reps: int = 15) -> dict:
    flush = torch.empty(L2_FLUSH_BYTES // 4, device="cuda")
    copy_bw = copy_bandwidth_gbs()
    results = {}
    for wl in workloads:
        per_round: dict[str, list[float]] = {n: [] for n in PIPELINES}
        for _ in range(rounds):
            # one pipeline in memory at a time: the 1B-param sets need ~16 GB each
            for name in PIPELINES:
                pl = make(name, wl, "cuda")
                for _ in range(3):
                    pl.reset()
                    pl()  # warm-up; creates the optimizer state
                torch.cuda.synchronize()
                t = sorted(_time_ms(pl, reps, flush, setup=pl.reset))
                per_round[name].append(t[len(t) // 2])
                del pl
                torch.cuda.empty_cache()
        entry = summarize(per_round, FLOOR_BYTES_PER_PARAM * wl.numel, copy_bw, unit_s=1e-3)
        results[wl.name] = entry
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "capability": f"sm_{props.major}{props.minor}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "fusedopt_backend": fusedopt.backend_info()["devices"]["cuda:0"]["backend"],
        "fusedopt_cuda_build": fusedopt.backend_info()["build"].get("cuda"),  # archs, extra nvcc flags
        "probe_gbs": copy_bw,
        "probe": "device-to-device copy of 1 GiB, read + write counted",
        "grads": f"N(0, 1) scaled by {SCALE:g}, restored before every repetition (untimed)",
        "bytes_per_param": FLOOR_BYTES_PER_PARAM,
        "bytes_note": "GB/s of every pipeline is computed on the 32 B/param floor of the fused two-pass step",
        "rounds": rounds,
        "reps_per_round": reps,
        "results": results,
    }
