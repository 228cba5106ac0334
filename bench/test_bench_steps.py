"""pytest-benchmark suite: each step of `python -m fusedopt bench` (the AdamW
step alone, the whole AMP step) per implementation and workload, on the GPU
when there is one and on the CPU otherwise. The runner's own pieces are used
(fusedopt.benchmark), so both time the same thing.

    pytest bench/ --benchmark-only --benchmark-group-by=param:step,param:workload
    pytest bench/ --benchmark-only --workloads gpt2-124M,2000x4096

Its use is comparing commits (`--benchmark-save`, `--benchmark-compare`: see
the README). Compare implementations with `python -m fusedopt bench`, which
alternates them within each round and reports ratios measured side by side.
"""

import pytest
import torch

from fusedopt.benchmark.cli import resolve_entries
from fusedopt.benchmark.steps import STEPS
from fusedopt.benchmark.workloads import WORKLOADS

from .conftest import DEVICE

ENTRIES, _ = resolve_entries(None, list(STEPS), DEVICE)  # what runs here
ROUNDS = 30


@pytest.mark.parametrize("step,impl", [(s, n) for s, names in ENTRIES.items() for n in names])
def test_step(benchmark, step, impl, workload):
    wl = WORKLOADS[workload]
    runner = STEPS[step].entries[impl].build(wl.params(device=DEVICE), DEVICE)
    runner()  # state initialisation is not part of the step being timed
    if DEVICE == "cuda":
        def call():
            runner()
            torch.cuda.synchronize()

        def setup():
            runner.reset()
            torch.cuda.synchronize()
    else:
        call, setup = runner, runner.reset
    benchmark.extra_info.update(params=wl.numel, tensors=wl.tensors, device=DEVICE)
    # the AMP step's scaled grads are put back before every round, untimed (amp_pipelines.py)
    benchmark.pedantic(call, setup=setup, rounds=ROUNDS, warmup_rounds=3)
