"""pytest-benchmark suite: the whole AMP + clip + AdamW step per pipeline, on
the GPU when there is one (model-shaped sets) and on the CPU otherwise.

    pytest bench/test_bench_amp.py --benchmark-only --benchmark-group-by=param:workload

For GPU figures with CUDA events and L2 flushes, use `python -m fusedopt bench`.
"""

import pytest
import torch

from bench.amp_pipelines import PIPELINES, make
from bench.workloads import CPU_WORKLOADS, GPU_WORKLOADS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WORKLOADS = GPU_WORKLOADS if DEVICE == "cuda" else CPU_WORKLOADS
ROUNDS = 30


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_amp_step(benchmark, pipeline, workload):
    pl = make(pipeline, WORKLOADS[workload], DEVICE)
    pl()  # state initialisation is not part of the step being timed
    if DEVICE == "cuda":
        def step():
            pl()
            torch.cuda.synchronize()

        def setup():
            pl.reset()
            torch.cuda.synchronize()
    else:
        step, setup = pl, pl.reset
    benchmark.extra_info["params"] = WORKLOADS[workload].numel
    # the scaled grads are put back before every round, untimed (amp_pipelines.py)
    benchmark.pedantic(step, setup=setup, rounds=ROUNDS, warmup_rounds=3)
