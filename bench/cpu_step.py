"""One AdamW step on the CPU, timed for each implementation on the same params.

Implementations: fusedopt native, fusedopt reference (plain torch, the
fallback), torch.optim.AdamW(foreach=True), torch.optim.AdamW(fused=True), and
DeepSpeed's DeepSpeedCPUAdam when it can be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import fusedopt
from fusedopt import _ops

from .summary import median, summarize
from .workloads import Workload

# bytes an fp32 AdamW step must move per parameter: read p, g, m, v; write p, m, v
ADAMW_BYTES_PER_PARAM = 28


def _make_fusedopt_reference(params):
    """fusedopt with every tensor routed to the plain-torch reference path."""
    opt = fusedopt.AdamW(params, lr=1e-3, weight_decay=0.01)
    original = _ops.ops_for

    def step():
        _ops.ops_for = lambda device: _ops.reference
        try:
            opt.step()
        finally:
            _ops.ops_for = original

    return step


def implementations() -> dict[str, Callable[[list], Callable[[], None]]]:
    impls: dict[str, Callable[[list], Callable[[], None]]] = {
        "torch-fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True).step,
        "torch-foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, foreach=True).step,
    }
    if _ops.CPU_LIB.loaded:
        impls["fusedopt"] = lambda ps: fusedopt.AdamW(ps, lr=1e-3, weight_decay=0.01).step
    impls["fusedopt-reference"] = _make_fusedopt_reference
    try:  # optional: only where DeepSpeed is installed and its CPU Adam builds
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore

        impls["deepspeed-cpu-adam"] = lambda ps: DeepSpeedCPUAdam(ps, lr=1e-3, weight_decay=0.01, adamw_mode=True).step
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        pass
    return impls


def median_seconds(fn: Callable[[], None], reps: int, warmup: int = 3,
                   setup: Callable[[], None] | None = None) -> float:
    """Median wall time of fn(); `setup`, when given, runs untimed before every call."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(reps):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def bandwidth_probe_gbs(nbytes: int = 256 << 20, reps: int = 10) -> dict[str, float]:
    """Memory bandwidth probes on buffers far larger than the caches.

    "inplace_add" (a += b: read a and b, write a back) has the optimizer's access
    pattern: in-place read-modify-write plus a read-only stream, so no write
    allocation traffic; it is the reference the "% of probe" figures use.
    "copy" (STREAM-style, counting read + write) is shown for comparison; its
    write-allocate reads make it the lower of the two."""
    a = torch.ones(nbytes // 4)
    b = torch.ones_like(a)
    t_add = median_seconds(lambda: a.add_(b), reps)
    t_copy = median_seconds(lambda: a.copy_(b), reps)
    return {"inplace_add": 3 * nbytes / t_add / 1e9, "copy": 2 * nbytes / t_copy / 1e9}


def cpu_description() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()


def cpu_environment() -> dict:
    """What every CPU report records about the machine and the software."""
    return {
        "device": cpu_description(),
        "threads": torch.get_num_threads(),
        "cpu_isa": _ops.cpu_isa(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "probe": "in-place add (a += b) on 256 MiB, read + read + write counted",
    }


def run(workloads: list[Workload], rounds: int = 5, reps: int = 15) -> dict:
    """Each workload in a fresh process: what one workload leaves behind in the
    allocator (freed blocks, a fragmented heap) changes where the next one's
    tensors land, and with them how fast every implementation streams memory."""
    import json
    import tempfile

    reports = []
    for wl in workloads:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run(
                [sys.executable, "-m", "bench.cpu_step", wl.name, str(rounds), str(reps), f.name],
                check=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
            reports.append(json.load(open(f.name)))
    # each workload's "% of probe" is against the probe of its own process
    merged = reports[0]
    for r in reports[1:]:
        merged["results"].update(r["results"])
    merged["probe_gbs_per_workload"] = {name: r["probe_gbs"] for r in reports for name in r["results"]}
    merged["probe_gbs"] = median(r["probe_gbs"] for r in reports)
    return merged


def run_in_process(workloads: list[Workload], rounds: int = 5, reps: int = 15) -> dict:
    """Times every implementation on every workload. Implementations alternate
    within each round, so that a noisy machine slows them alike; ratios are
    taken per round and their median reported."""
    impls = implementations()
    probe = []
    results = {}
    for wl in workloads:
        steppers = {name: make(wl.params()) for name, make in impls.items()}
        per_round: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(rounds):
            probe.append(bandwidth_probe_gbs())
            for name, step in steppers.items():
                per_round[name].append(median_seconds(step, reps))
        probe_now = median(p["inplace_add"] for p in probe[-rounds:])
        entry = summarize(per_round, ADAMW_BYTES_PER_PARAM * wl.numel, probe_now)
        results[wl.name] = entry
        del steppers
    return {
        **cpu_environment(),
        "probe_gbs": median(p["inplace_add"] for p in probe),
        "copy_gbs": median(p["copy"] for p in probe),
        "bytes_per_param": ADAMW_BYTES_PER_PARAM,
        "rounds": rounds,
        "reps_per_round": reps,
        "results": results,
        "env": {k: v for k, v in os.environ.items() if k.startswith("FUSEDOPT_")},
    }


if __name__ == "__main__":
    # python -m bench.cpu_step WORKLOAD ROUNDS REPS OUT.json (used by run())
    import json

    from .workloads import CPU_WORKLOADS

    name, rounds_arg, reps_arg, out = sys.argv[1:5]
    report = run_in_process([CPU_WORKLOADS[name]], rounds=int(rounds_arg), reps=int(reps_arg))
    with open(out, "w") as fh:
        json.dump(report, fh)
