"""How the suite's figures are taken: one workload's steps, every
implementation alternating call by call.

A test that timed its own implementation back to back would compare moments,
not implementations: on a shared machine the load moves from one test to the
next, and a run compared with itself moved 4-74x. The runner's rounds
(`python -m fusedopt bench`: each implementation ~0.25 s per round, the
median of its calls) are still too coarse for a 2-core machine shared with
others (measured: README, "Comparing commits"). So here a round is short:

  every implementation, in turn (the order rotates from round to round), runs
  a burst of calls lasting about BURST_S (one call when a call is longer),
  and its figure for the round is the fastest call of its burst.

The fastest call of a short burst is the call that ran without being
preempted; the bursts of one round are milliseconds apart, so a change of
load hits every implementation of the round alike, and the ratio to torch
fused is taken round by round. The pieces are the runner's: its steps and
implementations (fusedopt.benchmark.steps), workloads, memory plan and timers
(wall clock on the CPU; CUDA events with the L2 flushed before every call on
a GPU); the AMP step's scaled grads are put back, untimed, before every call.
A workload whose implementations do not fit in memory together is measured
by the runner's own measure() (rounds of one implementation at a time) and
says so.

    python -m bench.interleaved SPEC.json OUT.json   (a fresh process per workload: sampler.py)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from fusedopt.benchmark.measure import _clone, measure
from fusedopt.benchmark.memory import plan
from fusedopt.benchmark.steps import STEPS, Step
from fusedopt.benchmark.summary import median
from fusedopt.benchmark.timing import timer_for
from fusedopt.benchmark.workloads import WORKLOADS, Workload

BURST_S = {"cpu": 0.02, "cuda": 0.002}  # an implementation's turn within a round
MAX_BURST = 32  # calls; a tiny step still yields its turn quickly
WARMUP_CALLS = 2  # after the first call (state creation, tracing and compiling)


def _burst(one_s: float, kind: str) -> int:
    return int(min(MAX_BURST, max(1, BURST_S[kind] / max(one_s, 1e-9))))


def measure_interleaved(step: Step, wl: Workload, names: list[str], device: str, rounds: int) -> dict:
    """Times `names` on `wl`, alternating call by call. Returns per
    implementation its figure per round (ms), calls per burst and first-call
    seconds, optional libraries that failed, or {"skipped": why}."""
    timer = timer_for(device)
    kind = device.split(":")[0]
    mem = plan(step, wl, len(names), device)
    if mem.mode == "skip":
        return {"skipped": mem.note}
    if mem.mode != "resident":  # cannot alternate call by call: the runner's rounds, one at a time
        r = measure(step, wl, names, device, rounds, None)
        return {"method": f"the runner's rounds ({mem.note})", "failed": r["failed"], "first_call_s": r["first_call_s"],
                "burst": r["reps"], "rounds_ms": {n: x["rounds_ms"] for n, x in r["results"].items()}}
    source = wl.params(device=device)
    runners, first_call, burst, failed = {}, {}, {}, {}
    for name in names:
        try:
            run = step.entries[name].build(_clone(source), device)
            t0 = time.perf_counter()
            run.reset()
            run()  # creates the state; traces and compiles a compiled step
            timer.sync()
            first_call[name] = time.perf_counter() - t0
            for _ in range(WARMUP_CALLS):
                run.reset()
                run()
            burst[name] = _burst(timer.median_s(run, 1, setup=run.reset), kind)
            runners[name] = run
        except Exception as exc:  # noqa: BLE001
            if step.entries[name].impl.library is None:
                raise  # fusedopt's or torch's own: a bug to see, not to step around
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    del source
    order = list(runners)
    rounds_ms: dict[str, list[float]] = {n: [] for n in order}
    for i in range(rounds):
        for name in order[i % len(order):] + order[:i % len(order)]:
            run = runners[name]
            rounds_ms[name].append(1e3 * min(timer.median_s(run, 1, setup=run.reset) for _ in range(burst[name])))
    del runners
    timer.release()
    return {"method": "call by call", "failed": failed, "first_call_s": first_call, "burst": burst,
            "rounds_ms": rounds_ms}


def summarize(result: dict, step: Step, wl: Workload, baseline: str) -> dict:
    """Per implementation: the median time and the median of its per-round
    ratios to `baseline` (its time over the implementation's: > 1 is faster)."""
    base = result["rounds_ms"][baseline]
    out = {}
    for name, ms in result["rounds_ms"].items():
        per_round = [b / t for b, t in zip(base, ms)]
        out[name] = {"rounds_ms": ms, "median_ms": median(ms), "speedup": median(per_round),
                     "round_speedups": per_round, "burst": result["burst"][name],
                     "first_call_s": result["first_call_s"][name],
                     "gbs": step.bytes_per_param * wl.numel / (median(ms) / 1e3) / 1e9}
    return out


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    wl = WORKLOADS[spec["workload"]]
    result = {s: measure_interleaved(STEPS[s], wl, names, spec["device"], spec["rounds"])
              for s, names in spec["names"].items()}
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
