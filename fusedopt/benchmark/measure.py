"""Timing one step on one workload, every entry in the same rounds.

Entries alternate within each round, so a machine whose speed drifts (other
jobs, frequency, memory traffic) slows them alike; each round gives one median
time per entry, the ratio to the baseline is taken per round, and the reported
ratio is the median of those.
"""

from __future__ import annotations

import time

import torch

from .memory import plan
from .steps import Step
from .summary import median, summarize
from .timing import timer_for
from .workloads import Workload

# the ratios' reference on a workload the step's baseline cannot take
BASELINE_INSTEAD = "torch-foreach"

# --reps unset: repetitions per round sized so that one entry's round takes
# about this long, within these bounds (a slow entry still gets a median of 3)
TARGET_ROUND_S = {"cpu": 0.25, "cuda": 0.05}
AUTO_REPS = {"cpu": (3, 15), "cuda": (5, 20)}


def _clone(source: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    out = []
    for p in source:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        out.append(q)
    return out


def _warmup_calls(reps: int) -> int:
    return max(1, min(3, reps // 3))


class _Built:
    """One entry's runner, warmed up: its state exists and its pages are touched."""

    def __init__(self, step: Step, name: str, source, device: str, timer, reps: int | None):
        self.runner = step.entries[name].build(_clone(source), device)
        t0 = time.perf_counter()
        self.runner.reset()
        self.runner()  # the first step creates the optimizer state
        timer.sync()
        # state creation and, for a compiled step, tracing and compiling
        self.first_call_s = time.perf_counter() - t0
        if reps is None:  # one timed call sizes the repetitions
            kind = timer.device.split(":")[0]
            lo, hi = AUTO_REPS[kind]
            one = timer.median_s(self.runner, 1, setup=self.runner.reset)
            reps = int(min(hi, max(lo, TARGET_ROUND_S[kind] / max(one, 1e-9))))
        self.reps = reps


def measure(step: Step, wl: Workload, names: list[str], device: str, rounds: int, reps: int | None) -> dict:
    """Times `names` (the baseline among them) on `wl`; returns the figures for
    the report, or {"skipped": why} when the workload does not fit."""
    timer = timer_for(device)
    # implementations that cannot take these params are left out; where that is
    # the baseline, the ratios are to torch's foreach AdamW instead
    left_out = {n: why for n, why in wl.without if n in names}
    names = [n for n in names if n not in left_out]
    baseline = step.baseline
    if baseline in left_out:
        baseline = BASELINE_INSTEAD
        names = [baseline] + [n for n in names if n != baseline]
    mem = plan(step, wl, len(names), device)
    if mem.mode == "skip":
        return {"skipped": mem.note}
    source = wl.params(device=device)
    resident = mem.mode == "resident"
    built: dict[str, _Built] = {}
    reps_of: dict[str, int] = {}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    probes: list[float] = []
    first_call: dict[str, float] = {}  # seconds of each entry's first step
    failed: dict[str, str] = {}  # optional libraries that import but fail to build or step
    if not timer.probe_every_round:
        probes.append(timer.probe_gbs())
    for _ in range(rounds):
        if timer.probe_every_round:
            probes.append(timer.probe_gbs())
        for name in [n for n in names if n not in failed]:
            b = built.get(name)
            if b is None:
                try:
                    b = _Built(step, name, source, device, timer, reps_of.get(name, reps))
                except Exception as exc:  # noqa: BLE001
                    if step.entries[name].impl.library is None:
                        raise  # fusedopt's or torch's own: a bug to see, not to step around
                    failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    per_round.pop(name)
                    continue
            reps_of[name] = b.reps
            first_call.setdefault(name, b.first_call_s)
            run = b.runner
            for _ in range(_warmup_calls(b.reps)):  # caches and branch predictors back to this entry
                run.reset()
                run()
            per_round[name].append(timer.median_s(run, b.reps, setup=run.reset))
            if resident:
                built[name] = b
            else:
                del b, run
                timer.release()
    del built, source
    timer.release()
    probe = median(probes)
    return {
        "params": wl.numel,
        "tensors": wl.tensors,
        "memory": mem.mode,
        "memory_note": mem.note,
        "reps": reps_of,
        "probe_gbs": probe,
        "failed": failed,
        "left_out": left_out,
        "baseline": baseline,
        "first_call_s": first_call,
        "results": summarize(per_round, step.bytes_per_param * wl.bytes_scale * wl.numel, probe, baseline=baseline),
    }
