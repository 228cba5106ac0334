"""A whole benchmark run: every chosen step on every chosen workload, into one report.

CPU: each workload in a fresh process (worker.py), its steps one after the other. CUDA: in this
process, one after the other, the caching allocator emptied in between.
"""

from __future__ import annotations

import sys
import time

from .environment import describe
from .measure import measure
from .memory import plan
from .steps import STEPS
from .summary import median
from .timing import CpuTimer, CudaTimer
from .worker import in_fresh_process
from .workloads import WORKLOADS


def _progress(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


def _skipped(step_name: str, wl, entries: int, device: str) -> str | None:
    if wl.only_steps and step_name not in wl.only_steps:
        return f"skipped: {wl.name} runs in the {'/'.join(wl.only_steps)} step only"
    p = plan(STEPS[step_name], wl, entries, device)
    return p.note if p.mode == "skip" else None


def run(device: str, steps: list[str], workloads: list[str], names: dict[str, list[str]], rounds: int,
        reps: int | None, not_compared: dict[str, str], command: str) -> dict:
    """names: step -> the entries it times (the baseline first). Returns the report."""
    report = {
        **describe(device),
        "command": command,
        "probe": (CpuTimer if device == "cpu" else CudaTimer).probe_about,
        "rounds": rounds,
        "reps": "auto" if reps is None else reps,
        "not_compared": not_compared,
        "steps": {},
    }
    for step_name in steps:
        step = STEPS[step_name]
        report["steps"][step_name] = {
            "title": step.title,
            "short": step.short,
            "bytes_per_param": step.bytes_per_param,
            "bytes_about": step.bytes_about,
            "baseline": step.baseline,
            "labels": {n: step.entries[n].label for n in names[step_name]},
            "highlight": [n for n in names[step_name] if step.entries[n].highlight],
            "workloads": {},
            "skipped": {},
            "errors": {},
        }
    for i, wl_name in enumerate(workloads, 1):
        wl = WORKLOADS[wl_name]
        _progress(f"[{i}/{len(workloads)}] {wl_name} ({wl.describe()}):", end="")
        t0 = time.perf_counter()
        # what cannot fit (or run) is known before a process is started for it
        results = {s: {"skipped": why} for s in steps if (why := _skipped(s, wl, len(names[s]), device))}
        todo = [s for s in steps if s not in results]
        spec = dict(steps=todo, workload=wl_name, names=names, device=device, rounds=rounds, reps=reps)
        if todo and device == "cpu":
            results.update(in_fresh_process(spec))
        elif todo:
            results.update({s: measure(STEPS[s], wl, names[s], device, rounds, reps) for s in todo})
        if "error" in results:
            for s in steps:
                report["steps"][s]["errors"][wl_name] = results["error"]
            _progress(f" {results['error']}:\n{results['output']}")
            continue
        notes = []
        for step_name in steps:
            result = results[step_name]
            section = report["steps"][step_name]
            if "skipped" in result:
                section["skipped"][wl_name] = result["skipped"]
                notes.append(f"{step_name} {result['skipped']}")
                continue
            section["workloads"][wl_name] = result
            notes.append(f"{step_name} done" + ("" if result["memory"] == "resident" else f" ({result['memory_note']})"))
            notes += [f"{step_name}: {name} left out: {why}" for name, why in result.get("failed", {}).items()]
        _progress(f" {'; '.join(notes)}; {time.perf_counter() - t0:.0f} s")
    probes = [w["probe_gbs"] for s in report["steps"].values() for w in s["workloads"].values()]
    report["probe_gbs"] = median(probes) if probes else None
    return report
