"""pytest-benchmark suite: one AdamW step on the CPU per implementation.

    pytest bench/test_bench_cpu.py --benchmark-only --benchmark-group-by=param:workload

Compare implementations within one run (the machine's speed drifts between
runs); `python -m fusedopt bench` interleaves them and reports ratios.
"""

import pytest

from bench.cpu_step import implementations
from bench.workloads import CPU_WORKLOADS

IMPLS = implementations()


@pytest.mark.parametrize("workload", list(CPU_WORKLOADS))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_adamw_step(benchmark, impl, workload):
    wl = CPU_WORKLOADS[workload]
    step = IMPLS[impl](wl.params())
    step()  # state initialisation is not part of the step being timed
    benchmark.extra_info["params"] = wl.numel
    benchmark.extra_info["tensors"] = len(wl.shapes)
    benchmark(step)
