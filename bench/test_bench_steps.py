"""pytest-benchmark suite: each step of `python -m fusedopt bench` (the AdamW
step alone, the whole AMP step; the compiled step with --bench-full) per
implementation and workload, on the GPU when there is one and on the CPU
otherwise. Its use is comparing commits, fusedopt against torch before and
after (README, "Comparing commits"):

    .venv/bin/python -m pytest bench/ --benchmark-only --benchmark-save=before
    .venv/bin/python -m pytest bench/ --benchmark-only --benchmark-compare=0001

How the figures are taken (interleaved.py, sampler.py): per workload, every
implementation of every step is built and timed in rounds, alternating call
by call; in each round an implementation runs a short burst of calls and its
figure is the fastest call of the burst. Each test then hands its
implementation's figures (one per round) to pytest-benchmark through the
`timer` option, which replays them around a call that does nothing, so
pytest-benchmark's statistics are over those rounds; extra_info holds the
ratio to torch fused taken round by round. With --benchmark-disable each
test runs one real step instead, untimed.
"""

import pytest

from fusedopt.benchmark.steps import STEPS
from fusedopt.benchmark.workloads import WORKLOADS

from .conftest import DEVICE, record
from .sampler import RECORDED
from .selection import BASELINE


def _nothing():
    pass


@pytest.mark.benchmark(timer=RECORDED)
def test_step(benchmark, request, workload, step, impl):
    entry = STEPS[step].entries[impl]
    benchmark.group = f"{step}: {workload}"
    if benchmark.disabled:  # a real step, untimed: the suite still checks that every row runs
        runner = entry.build(WORKLOADS[workload].params(device=DEVICE), DEVICE)
        benchmark.pedantic(runner, setup=runner.reset, rounds=1)
        return
    result = request.getfixturevalue("bench_sampler").result(step, workload)
    if "error" in result:
        pytest.fail(f"measuring {workload}: {result['error']}\n{result['output']}", pytrace=False)
    if "skipped" in result:
        pytest.skip(f"{workload}: {result['skipped']}")
    if impl in result.get("failed", {}):  # an optional library that imports but fails to run
        pytest.skip(f"{entry.label}: {result['failed'][impl]}")
    fig = result["results"][impl]
    wl = WORKLOADS[workload]
    benchmark.extra_info.update(step=step, workload=workload, implementation=impl, label=entry.label,
                                device=DEVICE, params=wl.numel, tensors=wl.tensors, baseline=BASELINE,
                                method=result["method"], **fig)
    RECORDED.load([ms / 1e3 for ms in fig["rounds_ms"]])
    benchmark.pedantic(_nothing, rounds=len(fig["rounds_ms"]))
    assert RECORDED.exhausted(), "pytest-benchmark did not read every recorded round"
    record(request.config, benchmark.fullname, benchmark.extra_info)
