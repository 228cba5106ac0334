"""The wheel's CUDA library in a real CUDA build of torch, without a GPU: the
wheel built here (against this run's torch, often a CPU build) goes into a fresh
venv beside a CUDA build of torch of another minor version, as a user would
install it. There the CUDA library must load (its stream shim resolved from
libtorch_cuda), every op must have a CUDA kernel, `python -m fusedopt info` must
say so, and the CPU suite must pass.

FUSEDOPT_WHEEL_TEST_CUDA_TORCH is the pip requirement for that torch (.ci/run
sets it; several GB, cached by pip after the first run). When it is set, not
being able to install it fails the test. When it is not set, the default below
is tried, and a machine that cannot install it (no network) skips with pip's
reason."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest
import torch

from wheel_venv import ROOT, make_venv, pip_install, run

pytestmark = pytest.mark.slow

SPEC_VAR = "FUSEDOPT_WHEEL_TEST_CUDA_TORCH"
DEFAULT_SPEC = "torch==2.11.0"  # the CUDA 13.0 build the GPU machines run


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def cuda_venv(wheel, tmp_path_factory):
    """(python, work dir) of a venv with a CUDA torch and the wheel; removed after
    the module, since it holds several GB."""
    with zipfile.ZipFile(wheel) as z:
        if not any(n.startswith("fusedopt/_C_cuda.") for n in z.namelist()):
            pytest.skip("the wheel has no CUDA library (built without nvcc, or with FUSEDOPT_CUDA=0)")
    spec = os.environ.get(SPEC_VAR) or DEFAULT_SPEC
    work = tmp_path_factory.mktemp("cuda_torch")
    venv = work / "venv"
    try:
        py = make_venv(venv)
        got = pip_install(py, spec, cwd=work, check=False)
        if got.returncode != 0:
            errors = [line for line in got.stderr.splitlines() if line.startswith("ERROR:")]
            why = " ".join(errors)[:400] or got.stderr.strip()[-400:]
            if os.environ.get(SPEC_VAR):
                pytest.fail(f"{SPEC_VAR}={spec!r} could not be installed: {got.stdout[-2000:]}{got.stderr[-4000:]}")
            pytest.skip(f"could not install {spec} (set {SPEC_VAR} to a CUDA build of torch to insist): {why}")
        # the wheel and its test extra, with dependencies, as a user installs it:
        # the torch already there must satisfy it
        pip_install(py, f"{wheel}[test]", cwd=work)
        yield py, work
    finally:
        shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="module")
def probe(cuda_venv) -> dict:
    py, work = cuda_venv
    return json.loads(run(py, str(ROOT / "tests" / "wheel_cuda_probe.py"), cwd=work).stdout)


def test_the_venv_holds_the_wheel_and_a_cuda_torch_of_another_minor(cuda_venv, probe):
    _, work = cuda_venv
    assert probe["fusedopt"].startswith(str(work / "venv")), probe["fusedopt"]
    assert probe["torch_cuda"] is not None, f"{probe['torch']} is not a CUDA build of torch"
    assert _minor(probe["torch"]) != _minor(torch.__version__), (
        f"the wheel was built against torch {torch.__version__}; {SPEC_VAR} must name another minor version"
    )


def test_cuda_library_loads_with_the_stream_shim_from_libtorch_cuda(probe):
    assert probe["cuda_lib"]["loaded"], probe["cuda_lib"]["reason"]
    assert probe["shim_from"] == "libtorch_cuda.so", probe["shim_from"]


def test_every_op_has_a_cuda_kernel(probe):
    ops = probe["ops"]
    tensor_ops = sorted(n for n, k in ops.items() if not k["CompositeExplicitAutograd"])
    # the dispatcher's list and the ops the package calls must agree, so that
    # neither a new op nor a stale name goes unchecked
    assert tensor_ops == probe["bound"], (tensor_ops, probe["bound"])
    # the step plans' ops included: both libraries serve them
    missing = {n: [key for key in ("CPU", "CUDA") if not ops[n][key]] for n in tensor_ops}
    assert not any(missing.values()), missing


def test_info_reports_the_cuda_library(cuda_venv, probe):
    py, work = cuda_venv
    info = json.loads(run(py, "-m", "fusedopt", "info", "--json", cwd=work).stdout)
    assert info["libraries"]["fusedopt._C_cuda"].startswith("loaded _C_cuda."), info["libraries"]
    assert info["runtime"]["torch"] == probe["torch"] and info["runtime"]["torch_cuda"] == probe["torch_cuda"]
    text = run(py, "-m", "fusedopt", "info", cwd=work).stdout
    assert f"CUDA {probe['torch_cuda']}" in text and "loaded _C_cuda." in text, text


def test_cpu_suite_passes_beside_the_cuda_torch(cuda_venv):
    """The suite from a copy outside the source tree (so it imports the installed
    wheel), without the slow build tests; `cuda` tests skip without a GPU."""
    py, work = cuda_venv
    copy = work / "suite"
    for part in ("tests", "csrc"):  # csrc: a host-side check compiles its headers
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)  # the pytest configuration (markers)
    res = run(py, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests", cwd=copy, check=False)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
