"""From the interleaved measurement to pytest-benchmark: each workload
measured once (interleaved.py), when a test first asks for it, and a clock
that hands a test's recorded round times to pytest-benchmark.

pytest-benchmark times what a test calls. Here every figure was measured
before, implementations alternating; a test passes its implementation's
figures through the fixture's documented `timer` option: RECORDED reads 0.0
before a round and the recorded time after it, around a call that does
nothing, so pytest-benchmark's Min, Median, Rounds ... are statistics over
the recorded rounds exactly as measured, and the saved JSON names the timer
`recorded_rounds`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fusedopt.benchmark.steps import STEPS
from fusedopt.benchmark.workloads import WORKLOADS

from .interleaved import measure_interleaved, summarize

ROOT = Path(__file__).resolve().parent.parent  # the checkout: `python -m bench.interleaved` runs from it


class RecordedRounds:
    """A clock for pytest-benchmark's `timer` option that replays recorded
    round times: load() them, then every start reads 0.0 and every end reads
    the next recorded time, so end - start is that time to the last bit."""

    __name__ = "recorded_rounds"  # how pytest-benchmark names the timer (in the saved JSON too)

    def __init__(self):
        self._pending: list[float] = []
        self._started = False

    def load(self, seconds: list[float]) -> None:
        self._pending, self._started = list(seconds), False

    def __call__(self) -> float:
        self._started = not self._started
        if self._started:
            return 0.0
        if not self._pending:
            raise RuntimeError("pytest-benchmark read the recorded clock more often than there are rounds")
        return self._pending.pop(0)

    def exhausted(self) -> bool:
        return not self._pending and not self._started


RECORDED = RecordedRounds()


def _in_fresh_process(spec: dict) -> dict:
    """What one workload leaves in the allocator changes how fast the next
    one streams memory (the runner's worker.py says more): each CPU workload
    is measured in a child interpreter of its own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        res = subprocess.run([sys.executable, "-m", "bench.interleaved", str(spec_path), str(out_path)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            why = f"killed by signal {-res.returncode} (out of memory?)" if res.returncode < 0 else \
                f"exit status {res.returncode}"
            return {"error": f"the measurement process failed ({why})",
                    "output": "\n".join(res.stdout.strip().splitlines()[-15:])}
        return json.loads(out_path.read_text())


class Sampler:
    """Each workload measured once, every step's implementations together;
    result() gives a step's figures: {"results": name -> summary, ...}, or
    {"skipped": why}, or {"error": ..., "output": ...}."""

    def __init__(self, device: str, rounds: int, threads: int | None, wanted: dict[str, dict[str, list[str]]],
                 baseline: str):
        # wanted: workload -> step -> implementations (the baseline among them)
        self.device, self.rounds, self.threads, self.wanted, self.baseline = device, rounds, threads, wanted, baseline
        self.raw: dict[str, dict] = {}
        self.seconds: dict[str, float] = {}  # wall time of each workload's measurement

    def result(self, step: str, workload: str) -> dict:
        if workload not in self.raw:
            t0 = time.perf_counter()
            names = self.wanted[workload]
            if self.device == "cpu":
                self.raw[workload] = _in_fresh_process(dict(workload=workload, names=names, device=self.device,
                                                            rounds=self.rounds, threads=self.threads))
            else:
                self.raw[workload] = {s: measure_interleaved(STEPS[s], WORKLOADS[workload], n, self.device,
                                                             self.rounds) for s, n in names.items()}
            self.seconds[workload] = time.perf_counter() - t0
        raw = self.raw[workload]
        if "error" in raw:
            return raw
        got = raw[step]
        if "skipped" in got:
            return got
        return {"results": summarize(got, STEPS[step], WORKLOADS[workload], self.baseline),
                "failed": got["failed"], "method": got["method"]}
