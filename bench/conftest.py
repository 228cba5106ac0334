import pytest
import torch

from fusedopt.benchmark.workloads import WORKLOADS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the synthetic sets on the CPU (each test here runs ~30 rounds; GPT-2 small
# would take minutes per implementation); on a GPU every set that every step takes
DEFAULT = ("10x1M", "1000x10K", "100x1K") if DEVICE == "cpu" else tuple(
    name for name, wl in WORKLOADS.items() if not wl.only_steps)


def pytest_addoption(parser):
    parser.addoption("--workloads", default=",".join(DEFAULT),
                     help=f"comma-separated workloads for the bench/ suites, from {', '.join(WORKLOADS)}")


def pytest_generate_tests(metafunc):
    if "workload" in metafunc.fixturenames:
        names = [n for n in metafunc.config.getoption("workloads").split(",") if n]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            raise pytest.UsageError(f"--workloads: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
        metafunc.parametrize("workload", names)
