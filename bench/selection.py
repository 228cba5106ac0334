"""What the pytest-benchmark suite measures: by default a ~2-minute run of the
steps and implementations a user compares; with --bench-full everything the
runner (`python -m fusedopt bench`) knows that runs here.

  default  the AdamW step and the whole AMP step; torch fused, torch foreach,
           fusedopt, and fusedopt's plain-torch fallback (AdamW) or the torch
           idiom with fusedopt's classes (AMP); three synthetic workloads on the
           CPU (GPT-2 small alone would take minutes there), the model-shaped
           ones too on a GPU
  full     also the compiled step (torch.compile: tens of seconds of tracing
           and compiling per implementation and workload on a small CPU) and
           every implementation that imports here, on the runner's default
           workloads
"""

from __future__ import annotations

from fusedopt.benchmark.cli import resolve_entries
from fusedopt.benchmark.workloads import DEFAULT_WORKLOADS

# the comparison every table is read against (the runner's baseline of these steps)
BASELINE = "torch-fused"

DEFAULT_STEPS = ("adamw", "amp")
FULL_STEPS = ("adamw", "amp", "compile")
DEFAULT_IMPLS = {
    "adamw": ("torch-fused", "torch-foreach", "fusedopt", "fusedopt-reference"),
    "amp": ("torch-fused", "torch-foreach", "fusedopt", "fusedopt-idiom"),
}
DEFAULT_WORKLOADS_HERE = {
    "cpu": ("10x1M", "1000x10K", "100x1K"),
    "cuda": ("gpt2-124M", "2000x4096", "10x1M", "1000x10K", "100x1K"),
}
# rounds: every implementation of a group takes its turn once per round (a
# burst of calls, interleaved.py) and gets one figure per round
DEFAULT_ROUNDS = 30
# CPU threads for the steps. One: on a 2-core machine that others share, two
# threads per step spend most of a step waiting for each other at torch's
# parallel barriers whenever the other core is taken, so each implementation
# slows by how many barriers it has: ratios to torch fused moved 2-6x with the
# load. One thread slows them alike. --bench-threads 2 measures both cores.
DEFAULT_THREADS = {"cpu": 1, "cuda": None}


def workloads(device: str, full: bool) -> tuple[str, ...]:
    kind = device.split(":")[0]
    return DEFAULT_WORKLOADS[kind] if full else DEFAULT_WORKLOADS_HERE[kind]


def entries(device: str, full: bool) -> dict[str, list[str]]:
    """step -> the implementations timed (the step's own baseline first, then
    torch fused if that is not it), among those that run here: without the
    native kernels the rows that show them are left out, as the runner does."""
    steps = FULL_STEPS if full else DEFAULT_STEPS
    runnable, _ = resolve_entries(None, list(steps), device)
    chosen = {}
    for step, names in runnable.items():
        if not full:
            names = [n for n in names if n in DEFAULT_IMPLS[step]]
        # the step's baseline (torch compiled for the compiled step) stays
        # first, where the runner wants it; torch fused is in every group
        chosen[step] = names[:1] + sorted(names[1:], key=lambda n: n != BASELINE)
    return chosen
