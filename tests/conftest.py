import os

import pytest
import torch

import fusedopt._ops as ops
import wheel_venv

# True when this run exercises the native CPU kernels; the suite also runs with
# FUSEDOPT_DISABLE_NATIVE=1, where everything goes through fusedopt.reference.
NATIVE_CPU = ops.CPU_LIB.loaded
NATIVE_DISABLED = os.environ.get("FUSEDOPT_DISABLE_NATIVE", "") not in ("", "0")

requires_native_cpu = pytest.mark.skipif(
    not NATIVE_CPU, reason="the native CPU library is disabled in this run (FUSEDOPT_DISABLE_NATIVE=1)"
)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the CUDA kernel tests --------------------------------------------------------

# Runs that send cuda:0 to the plain-torch reference on purpose.
CUDA_KERNELS_OFF = NATIVE_DISABLED or ops._env_on("FUSEDOPT_DISABLE_CUDA")

# Tests that compare the CUDA kernels with the CPU kernels, or probe the CUDA
# harness itself: meaningless on the fallback.
requires_cuda_kernels = pytest.mark.skipif(
    CUDA_KERNELS_OFF, reason="the CUDA kernels are disabled in this run (FUSEDOPT_DISABLE_NATIVE/_CUDA)"
)


@pytest.fixture
def cuda_backend():
    """cuda:0 is served by the backend this run asks for: the CUDA kernels,
    unless FUSEDOPT_DISABLE_NATIVE/FUSEDOPT_DISABLE_CUDA sends it to the
    reference. Without this check a CUDA library that failed to load (or a GPU
    the build carries no code for) would let every CUDA test pass on the
    fallback. The tests of the CUDA kernels use it for every test."""
    import fusedopt

    expected = "reference" if CUDA_KERNELS_OFF else "cuda"
    info = fusedopt.backend_info()
    dev = info["devices"]["cuda:0"]
    assert dev["backend"] == expected, (dev, info["libraries"])
    return expected


@pytest.fixture
def kernels_only(monkeypatch):
    """Fails the test if any step of it falls back to the reference ops (a
    param the native kernels should take but do not)."""
    import fusedopt._reference_sgd as reference_sgd
    import fusedopt.reference as reference

    def refuse(name):
        def call(*args, **kwargs):
            raise AssertionError(f"fusedopt fell back to the reference's {name}")

        return call

    for name in ("adam_", "grad_stats_", "unscale_"):
        monkeypatch.setattr(reference, name, refuse(name))
    monkeypatch.setattr(reference_sgd, "sgd_", refuse("sgd_"))


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The wheel of this checkout, built once for all the wheel tests (slow)."""
    return wheel_venv.build_wheel(tmp_path_factory.mktemp("dist"))


# -- the torch matrix (tests/test_torch_matrix.py) ----------------------------------


@pytest.fixture(scope="session")
def matrix_runner(request, tmp_path_factory):
    """The matrix's venvs, prepared and exercised in background threads from
    the moment this is first asked for; None where the matrix is not insisted on.
    (Started with the session, beside the rest of the main pass, it saved no
    measurable time on 2 cores, where CPU time is the limit: the pass's tests
    slowed as much as the matrix gained, and time-bounded tests ran under load.)"""
    import datetime
    import json
    from pathlib import Path

    import torch_matrix

    if not torch_matrix.insisted():
        yield None
        return
    runner = torch_matrix.Runner(request.getfixturevalue("wheel"), tmp_path_factory.mktemp("matrix"))
    yield runner
    runner.close()
    if os.environ.get(torch_matrix.REPORT_VAR):
        report = {"date": datetime.date.today().isoformat(), "built_against": torch.__version__,
                  "entries": runner.report()}
        Path(os.environ[torch_matrix.REPORT_VAR]).write_text(json.dumps(report, indent=2) + "\n")


# -- the CUDA kernels under the CPU emulation (tests/cuda_emu) --------------------


@pytest.fixture(scope="session")
def cuda_emu():
    """Runs a case in the worker that holds the emulated CUDA library (built
    from this checkout's csrc/cuda, cached by content): cuda_emu.run(fn, **kw)
    calls the module-level function fn there and returns what it returns; an
    assertion in it fails the test with the worker's traceback, and an ASan or
    UBSan report (which ends the worker) fails it with the report."""
    import cuda_emu_build
    from cuda_emu_worker import EmuWorker

    build = cuda_emu_build.build()
    worker = EmuWorker(build.library, cuda_emu_build.preload())
    yield worker
    worker.close()
