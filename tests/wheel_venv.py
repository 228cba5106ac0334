"""Shared by the wheel tests: build the wheel as `make wheel` does, make a fresh
venv, and run pip or Python in it away from the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout, built against the running interpreter's torch."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-build-isolation", "--no-deps", "--wheel-dir", str(out)],
        check=True,
        capture_output=True,
    )
    wheels = list(out.glob("fusedopt-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def clean_env() -> dict:
    """The environment for commands in a fresh venv: none of this run's switches
    (the suite's second pass sets FUSEDOPT_DISABLE_NATIVE) and no PYTHONPATH that
    could lead back to the checkout."""
    drop = ("PYTHONPATH", "FUSEDOPT_DISABLE_NATIVE", "FUSEDOPT_DISABLE_CUDA", "FUSEDOPT_CPU_ISA")
    return {k: v for k, v in os.environ.items() if k not in drop}


def make_venv(where: Path) -> Path:
    """A new venv at `where`, with nothing installed; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin" / "python"


def run(py: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`py *args` in `cwd` (keep it outside the source tree, so that `import
    fusedopt` finds the installed wheel, not the checkout)."""
    res = subprocess.run([str(py), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited with {res.returncode}:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def pip_install(py: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(py, "-m", "pip", "install", "--quiet", *args, cwd=cwd, check=check)


def check_cuda_probe(probe: dict, built: dict | None) -> None:
    """What tests/wheel_cuda_probe.py printed in a venv, judged against the
    wheel's CUDA build record: the CUDA library loads wherever torch is a CUDA
    build of the wheel's CUDA major, with the stream shim from libtorch_cuda and
    a CUDA kernel for every op; elsewhere it is not loaded, and fusedopt says why."""
    same_major = built is not None and probe["torch_cuda"] and \
        probe["torch_cuda"].split(".")[0] == built["version"].split(".")[0]
    if same_major:
        assert probe["cuda_lib"]["loaded"], probe["cuda_lib"]["reason"]
        assert probe["shim_from"] == "libtorch_cuda.so", probe["shim_from"]
        tensor_ops = sorted(n for n, k in probe["ops"].items() if not k["CompositeExplicitAutograd"])
        assert tensor_ops == probe["bound"], (tensor_ops, probe["bound"])
        missing = {n: [k for k in ("CPU", "CUDA") if not probe["ops"][n][k]] for n in tensor_ops}
        assert not any(missing.values()), missing
    else:
        assert not probe["cuda_lib"]["loaded"]
        assert probe["cuda_lib"]["reason"], probe
