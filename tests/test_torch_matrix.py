"""One wheel, every torch a user has: the wheel built here (against this run's
torch, the newest when the suite runs as a new user gets it) installs into
fresh venvs with the floor (2.10.0), the CUDA 13.0 build the GPU machines run
(2.11.0), 2.13.0 and 2.14.1; a wheel built against the floor runs beside the
newest on another CPython (the newest beside this CPython is the main pass's
and tests/test_wheel.py's). In each: `python -m fusedopt info`, the
CUDA library where the torch is a CUDA build of the same CUDA major (it must
load and register every op), a short training against torch.optim, and the CPU
suite (all of it or a part: tests/torch_matrix.py). No GPU runs anything here.

The matrix downloads several GB per CUDA build of torch. It runs where
FUSEDOPT_TORCH_MATRIX is set (.ci/run sets it); there a version that cannot be
installed fails the test. Elsewhere each entry skips and says how to run it.
FUSEDOPT_TORCH_MATRIX_REPORT=FILE writes what each venv had and did, as JSON
(the README's compatibility table comes from bench/results/torch-matrix.json)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import torch_matrix
from elf_tools import external_dependencies, policy_violations
from wheel_venv import check_cuda_probe
from torch_matrix import MATRIX_VAR, Entry, Unavailable

pytestmark = pytest.mark.slow

ENTRIES = torch_matrix.entries()


@pytest.fixture(scope="module")
def runner(matrix_runner):
    """The venvs conftest.py started with the session (matrix_runner)."""
    if matrix_runner is None:
        pytest.skip(f"set {MATRIX_VAR}=all to install each torch of the matrix (several GB each) and test the wheel there")
    return matrix_runner


@pytest.fixture
def outcome(runner, request):
    entry: Entry = request.param
    try:
        return runner.result(entry.name)
    except Unavailable as exc:
        pytest.fail(f"{entry.name}: {exc} ({MATRIX_VAR} is set, so this is a failure, not a skip)")


def test_the_suite_lists_name_test_files_that_exist():
    """A renamed or deleted file must not silently drop out of the matrix: the
    two lists name existing test files, and none is in both."""
    here = Path(__file__).parent
    for name in torch_matrix.SELF_CHECKS + torch_matrix.TORCH_FACING:
        assert (here / name).is_file(), name
    assert not set(torch_matrix.SELF_CHECKS) & set(torch_matrix.TORCH_FACING)
    kinds = {e.suite for e in ENTRIES}
    assert kinds == {"wide", "torch-facing"}, kinds
    wide = torch_matrix.suite_args(ENTRIES[0], here)
    assert wide[0] == str(here) and len(wide) == 1 + len(torch_matrix.SELF_CHECKS)


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


@pytest.mark.parametrize("outcome", ENTRIES, ids=[e.name for e in ENTRIES], indirect=True)
def test_the_wheel_works_beside_this_torch(outcome):
    e = outcome.entry
    # the venv holds what the entry names
    assert outcome.probe["torch"].split("+")[0] == e.torch_spec.split("==")[1], outcome.probe["torch"]
    if e.python:
        assert outcome.python.startswith(e.python + "."), outcome.python
    assert "/venv/" in outcome.probe["fusedopt"], outcome.probe["fusedopt"]

    # info: the CPU kernels serve the CPU, the build is the one installed
    info = outcome.info
    assert info["devices"]["cpu"]["backend"] == "cpu-native", info["libraries"]
    assert info["build"]["torch_abi_floor"] == "2.10"
    assert info["runtime"]["torch"] == outcome.probe["torch"]

    # the CUDA library: loaded wherever torch is a CUDA build of the wheel's CUDA
    # major, with the stream shim from libtorch_cuda and a CUDA kernel for every op
    check_cuda_probe(outcome.probe, info["build"]["cuda"])

    # a short training: fusedopt's native kernels track torch.optim's run
    for r in outcome.training["results"]:
        assert r["backends"] == {"cpu-native": outcome.training["params"]}, r
        assert r["max_param_diff"] <= 1e-5, r
        first, last = r["fusedopt_losses"]
        assert last < 0.1 * first, r  # it trained
        assert abs(last - r["torch_losses"][1]) <= 1e-4 * r["torch_losses"][1] + 1e-7, r

    assert " passed" in outcome.suite


def test_the_matrix_spans_the_floor_to_the_newest():
    """The entries name the ABI floor, a minor release between, and this run's torch."""
    versions = {_minor(e.torch_spec.split("==")[1]) for e in ENTRIES}
    assert (2, 10) in versions and _minor(torch.__version__) in versions
    assert any(e.wheel == "oldest" for e in ENTRIES) and any(e.python for e in ENTRIES)


def test_this_run_tests_the_newest_torch_release():
    """The main pass runs on what a new user gets: the newest torch the registry
    offers for this CPython (a pin or a cap in pip's configuration would hide
    the torch users install, as it once did)."""
    if not torch_matrix.insisted():
        pytest.skip(f"asks the package index; runs where {MATRIX_VAR} is set")
    res = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "torch"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    first = res.stdout.strip().splitlines()[0]  # "torch (X.Y.Z)"
    newest = first[first.index("(") + 1 : first.index(")")]
    assert torch.__version__.split("+")[0] == newest, f"this run has torch {torch.__version__}; the newest is {newest}"


@pytest.fixture(scope="module")
def oldest_wheel(runner):
    try:
        return runner.oldest_wheel.result()
    except Unavailable as exc:
        pytest.fail(f"the floor's venv: {exc}")


def test_the_wheel_built_against_the_floor_keeps_the_system_floor(oldest_wheel, tmp_path):
    """The symbol versions and shared objects asked for hold whichever torch
    builds the libraries (this one is built against the floor)."""
    with zipfile.ZipFile(oldest_wheel) as z:
        z.extractall(tmp_path)
    info = json.loads((tmp_path / "fusedopt" / "_build_info.json").read_text())
    assert info["torch_abi_floor"] == "2.10"
    libs = sorted((tmp_path / "fusedopt").glob("*.so"))
    assert {lib.name.split(".")[0] for lib in libs} >= {"_C", "_bulk_c"}
    for lib in libs:
        assert external_dependencies(lib) == [], lib.name
        assert policy_violations(lib) == [], lib.name


def test_every_emulated_cuda_test_file_is_marked():
    """The matrix venvs select `not cuda_emulated`: an emulated test without the
    mark would build the emulation in every venv (minutes each), or fail there."""
    here = Path(__file__).parent
    unmarked = [f.name for f in sorted(here.glob("test_cuda_emulated_*.py"))
                if "pytest.mark.cuda_emulated" not in f.read_text()]
    assert not unmarked, unmarked


def test_every_file_that_imports_the_benchmark_harness_is_a_self_check():
    """The matrix runs a copy of tests/ away from the source tree, where bench/
    (not part of the wheel) cannot be imported: such a file must be a self-check."""
    here = Path(__file__).parent
    imports = re.compile(r"^\s*(from bench\b|import bench\b)", re.M)
    importing = {f.name for f in here.glob("test_*.py") if imports.search(f.read_text())}
    assert importing <= set(torch_matrix.SELF_CHECKS), sorted(importing - set(torch_matrix.SELF_CHECKS))
