"""Sharded and data-parallel training with fusedopt: FSDP2, HSDP, FSDP+TP, DDP,
ZeRO and distributed checkpoints, each compared with torch's optimizers under the
same sharding (the scenarios are in tests/dist_*.py).

The selected scenarios of one world size run in one job of gloo ranks on
127.0.0.1 (see dist_launch.py), bounded in time; each test reports its own.
The slow ones (4 ranks, DDP/ZeRO, checkpoints, CPU offload) run only in the
suite's first pass; the FSDP2 ones also run against the pure-torch fallback.
"""

from __future__ import annotations

import pytest

dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("needs torch.distributed with gloo", allow_module_level=True)

from dist_launch import run_job  # noqa: E402
from dist_scenarios import SCENARIOS  # noqa: E402

# a job's time limit: its scenarios run in seconds, process start-up on a
# loaded 2-core machine takes the most
JOB_TIMEOUT_S = {2: 240, 4: 300}


def _param(name):
    s = SCENARIOS[name]
    marks = [pytest.mark.slow] if s.slow else []
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(scope="module")
def results(request):
    """Runs, per world size, the scenarios of this module's selected tests."""
    wanted: dict[int, list[str]] = {}
    for item in request.session.items:
        if item.module is request.module and hasattr(item, "callspec"):
            name = item.callspec.params["name"]
            wanted.setdefault(SCENARIOS[name].world, []).append(name)
    out = {}
    for world, names in sorted(wanted.items()):
        out.update(run_job(world, names, JOB_TIMEOUT_S[world]))
    return out


@pytest.mark.parametrize("name", [_param(n) for n in SCENARIOS])
def test_scenario(name, results):
    r = results[name]
    assert r["ok"], r["error"]

