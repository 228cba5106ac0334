"""The pytest-benchmark suite's options, parametrization, defaults and summary.

  --workloads A,B   the workloads (default: selection.py's, by device)
  --bench-full      also the compiled step, every implementation that runs here
                    and the runner's default workloads (long: see the README)
  --bench-rounds N  rounds per workload (default 30); every implementation
                    takes its turn once per round
  --bench-threads N CPU threads for the steps (default 1 on the CPU: see selection.py)

Unless the command line says otherwise, pytest-benchmark's table is sorted by
name (so a compared run's row sits next to this run's), shows min, median,
max, IQR and rounds, in milliseconds; each test's group is its step and
workload. After it comes the suite's own table (vs_torch.py).
"""

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
import torch

from fusedopt.benchmark.steps import STEPS
from fusedopt.benchmark.workloads import WORKLOADS

from . import selection
from .sampler import Sampler
from .vs_torch import Source, tables

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_STATE = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("fusedopt bench/ suite")
    group.addoption("--workloads", default=None,
                    help=f"comma-separated workloads, from {', '.join(WORKLOADS)} (default here: "
                         f"{','.join(selection.workloads(DEVICE, full=False))})")
    group.addoption("--bench-full", action="store_true",
                    help="the full suite: also the compiled step (torch.compile), every implementation that "
                         "runs here, and the runner's default workloads")
    group.addoption("--bench-rounds", type=int, default=selection.DEFAULT_ROUNDS,
                    help="rounds per workload; every implementation takes its turn once per round "
                         f"(default {selection.DEFAULT_ROUNDS})")
    group.addoption("--bench-threads", type=int, default=selection.DEFAULT_THREADS[DEVICE],
                    help="CPU threads for the steps (default on the CPU: 1, steady on a shared machine; "
                         "torch's own default is one per core)")


def _given(config, option: str) -> bool:
    """Whether the user set a pytest-benchmark option (command line, PYTEST_ADDOPTS or addopts)."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
            *config.getini("addopts")]
    return any(a == option or a.startswith(option + "=") for a in args)


def pytest_configure(config):
    # runs before pytest-benchmark reads its options (its pytest_configure is trylast)
    if not _given(config, "--benchmark-sort"):
        config.option.benchmark_sort = "name"
    if not _given(config, "--benchmark-columns"):
        config.option.benchmark_columns = ["min", "median", "max", "iqr", "rounds"]
    if config.getoption("bench_rounds") < 1:
        raise pytest.UsageError("--bench-rounds must be at least 1")
    if (config.getoption("bench_threads") or 1) < 1:
        raise pytest.UsageError("--bench-threads must be at least 1")
    config.stash[_STATE] = {
        "load_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": shlex.join([Path(sys.executable).name, "-m", "pytest", *config.invocation_params.args]),
    }


def pytest_generate_tests(metafunc):
    if {"workload", "step", "impl"} <= set(metafunc.fixturenames):
        config = metafunc.config
        full = config.getoption("bench_full")
        given = config.getoption("workloads")
        names = [n for n in given.split(",") if n] if given is not None else selection.workloads(DEVICE, full)
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown or not names:
            raise pytest.UsageError(f"--workloads: unknown {unknown or 'empty list'}; choose from {', '.join(WORKLOADS)}")
        cases = [(w, s, i) for w in names for s, impls in selection.entries(DEVICE, full).items() for i in impls]
        metafunc.parametrize("workload,step,impl", cases, ids=["-".join(c) for c in cases])


@pytest.fixture(scope="session")
def bench_sampler(request):
    """One measurement per workload, of every implementation a selected test
    needs plus the baselines, shared by the tests that report its figures."""
    session = request.session
    chosen = selection.entries(DEVICE, session.config.getoption("bench_full"))
    wanted: dict[str, dict[str, set]] = {}
    for item in session.items:
        p = getattr(item, "callspec", None)
        if p is not None and {"workload", "step", "impl"} <= p.params.keys():
            wanted.setdefault(p.params["workload"], {}).setdefault(p.params["step"], set()).add(p.params["impl"])
    for steps in wanted.values():
        for step, impls in steps.items():
            impls |= {STEPS[step].baseline, selection.BASELINE}
            steps[step] = [n for n in chosen[step] if n in impls]  # the runner's order, baseline first
    sampler = Sampler(DEVICE, session.config.getoption("bench_rounds"), session.config.getoption("bench_threads"),
                      wanted, selection.BASELINE)
    session.config.stash[_STATE]["sampler"] = sampler
    return sampler


def pytest_benchmark_scale_unit(config, unit, benchmarks, best, worst, sort):
    """Milliseconds in every table (the runner's unit), unless --benchmark-time-unit says otherwise."""
    if unit == "seconds" and config.getoption("benchmark_time_unit") in (None, "auto"):
        return "m", 1e3
    return None


def run_record(config) -> dict:
    state = config.stash[_STATE]
    sampler = state.get("sampler")
    return {
        "command": state["command"],
        "device": DEVICE,
        "torch": torch.__version__,
        "rounds": config.getoption("bench_rounds"),
        "threads": config.getoption("bench_threads"),
        "full": config.getoption("bench_full"),
        "load_average_1min": {"start": state["load_start"],
                              "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "measure_seconds": dict(sampler.seconds) if sampler else {},
        "how": "bench/interleaved.py: per workload, implementations alternate call by call; a round is one "
               "burst of calls per implementation, its figure the fastest call of the burst; each benchmark's "
               "data are its figures per round",
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["fusedopt_bench"] = run_record(config)


def _compared(config) -> list[Source]:
    """The runs --benchmark-compare loaded. pytest-benchmark offers no hook with
    them; its session keeps them (compared_mapping: path -> fullname -> benchmark)."""
    from pytest_benchmark.utils import short_filename

    bs = getattr(config, "_benchmarksession", None)
    out = []
    for path, mapping in (getattr(bs, "compared_mapping", None) or {}).items():
        saved = {}
        try:  # the whole saved file (file storage): its commit and the suite's run record
            saved = json.loads(Path(getattr(bs.storage, "path", ""), path).read_text())
        except (OSError, ValueError):
            pass
        out.append(Source(short_filename(path, bs.machine_id), saved.get("fusedopt_bench"),
                          saved.get("commit_info"), mapping))
    return out


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, config):
    rows = {b["fullname"]: b for b in config.stash[_STATE].get("rows", [])}
    if not rows:
        return
    from pytest_benchmark.utils import get_commit_info

    now = Source("now", run_record(config), get_commit_info(), rows)
    terminalreporter.section("fusedopt vs torch", sep="-", bold=True)
    rounds = f"the {config.getoption('bench_rounds')} rounds"
    for line in tables(now, _compared(config), rounds):
        terminalreporter.write_line(line)


def record(config, fullname: str, extra_info: dict) -> None:
    """A test's figures, for the summary."""
    config.stash[_STATE].setdefault("rows", []).append({"fullname": fullname, "extra_info": extra_info})
