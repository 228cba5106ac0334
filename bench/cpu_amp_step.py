"""The whole AMP + clip + AdamW step on the CPU (torch.amp.GradScaler("cpu")
against fusedopt's fused loop and idiom): the CPU side of the step comparison
whose GPU figures come from cuda_step.py."""

from __future__ import annotations

from .amp_pipelines import PIPELINES, SCALE, make
from .cpu_step import bandwidth_probe_gbs, cpu_environment, median_seconds
from .summary import median, summarize
from .workloads import Workload

# per fp32 param: fusedopt's floor (read g once for inf + norm; update reads p,g,m,v, writes p,m,v)
FLOOR_BYTES_PER_PARAM = 32


def run(workloads: list[Workload], rounds: int = 5, reps: int = 15) -> dict:
    probes, results = [], {}
    for wl in workloads:
        pipes = {name: make(name, wl, "cpu") for name in PIPELINES}
        for pl in pipes.values():
            pl()  # state is created on the first step
            pl.reset()
        per_round: dict[str, list[float]] = {n: [] for n in pipes}
        for _ in range(rounds):
            probes.append(bandwidth_probe_gbs()["inplace_add"])
            for name, pl in pipes.items():
                per_round[name].append(median_seconds(pl, reps, setup=pl.reset))
        entry = summarize(per_round, FLOOR_BYTES_PER_PARAM * wl.numel, median(probes[-rounds:]))
        results[wl.name] = entry
        del pipes
    return {
        **cpu_environment(),
        "step": "unscale + inf check + clip(1.0) + AdamW + scale update",
    "grads": f"N(0, 1) scaled by {SCALE:g}, restored before every repetition (untimed)",
        "probe_gbs": median(probes),
        "bytes_per_param": FLOOR_BYTES_PER_PARAM,
        "rounds": rounds,
        "reps_per_round": reps,
        "results": results,
    }
