"""The torch and CPython versions one wheel is proven on (tests/test_torch_matrix.py),
and the runner that prepares and exercises a fresh venv for each.

Each entry installs a torch into a new venv, then the wheel with its test
extra (so the torch there must satisfy the wheel's requirement), and runs, away
from the source tree: `python -m fusedopt info`, the CUDA library probe, a short
training against torch.optim (tests/matrix_training.py) and the CPU suite from a
copy of tests/ (`-m "not slow"`): all of it where the floor is installed, its
torch-facing part beside the later releases (see SELF_CHECKS and TORCH_FACING).
The newest torch has no entry of its own: the main pass runs every file beside
it, and tests/test_wheel.py installs the wheel beside it in a fresh venv and
probes its CUDA library there. Entries run two at a time; the floor's venv
also builds the second wheel, against the oldest torch, while its suite runs,
and the last entry installs it beside the newest torch on another CPython."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wheel_venv import ROOT, clean_env

# The floor of the stable ABI the libraries target (setup.py), the CUDA 13.0
# build the GPU machines run, and the releases between them and the newest.
FLOOR = "2.10.0"
MATRIX_VAR = "FUSEDOPT_TORCH_MATRIX"
REPORT_VAR = "FUSEDOPT_TORCH_MATRIX_REPORT"  # a path: the run's table, as JSON
OTHER_PYTHON = "3.12"  # a CPython other than the 3.11 the main venv runs on

# Test files that check fusedopt against itself, pure math, the build tools or
# the benchmark harness: the torch a venv has does not change what they check,
# and the main pass runs them once.
SELF_CHECKS = (
    "test_bench_fallback_rows.py", "test_bench_lowmem_quality.py", "test_bench_pytest_suite.py",
    "test_bench_smoke.py", "test_bench_step_memory.py", "test_bulk.py", "test_cuda_build.py", "test_duplicates.py",
    "test_fma_emulation.py", "test_list_op_handles.py", "test_lowmem_math_cuda_build.py", "test_master_follow.py", "test_native_plan.py",
    "test_plan_scenarios.py", "test_quant8.py", "test_bucket_cache.py", "test_stochastic_rounding.py",
)
# The files where torch is the oracle, or where the torch API fusedopt uses
# (optim, amp, dynamo, distributed, autograd, the dispatcher) changes between
# releases: every entry runs these.
TORCH_FACING = (
    "test_adagrad.py", "test_adam_parity.py", "test_amp.py", "test_amp_flag.py", "test_autograd_versions.py",
    "test_clip.py", "test_clip_value.py", "test_compile.py", "test_differentiable.py", "test_distributed.py",
    "test_errors.py", "test_lightning.py", "test_lion.py", "test_low_precision.py", "test_ops.py",
    "test_sgd_parity.py", "test_state_dict.py", "test_tensor_lr.py", "test_torch_bitwise.py", "test_torch_optim_db.py",
    "test_validation.py",
)
# The archs of the wheel built against the floor: which device code it holds does
# not change what its libraries link against or register, which is what that
# wheel proves (`make wheel` builds sm_80, sm_90 and PTX: tests/test_wheel.py)
OLDEST_WHEEL_ARCHS = "9.0"


@dataclass(frozen=True)
class Entry:
    name: str
    torch_spec: str
    python: str | None = None  # None: this run's CPython; else e.g. "3.12"
    wheel: str = "newest"  # "newest": built against this run's torch; "oldest": against FLOOR
    builds_oldest: bool = False  # this venv also builds the wheel against its torch
    # "wide": every test file but SELF_CHECKS; "torch-facing": TORCH_FACING only
    suite: str = "torch-facing"


def newest_version() -> str:
    """This run's torch (the main pass's: what `torch>=2.10` resolved to)."""
    return torch.__version__.split("+")[0]


def entries() -> list[Entry]:
    newest = newest_version()
    return [
        # the floor runs the wide suite (first: the longest, and the oldest wheel's
        # builder); the releases after it the files where torch is the oracle or
        # its API changes; the newest torch runs all of it in the main pass
        Entry(f"torch-{FLOOR}", f"torch=={FLOOR}", builds_oldest=True, suite="wide"),
        Entry("torch-2.11.0", "torch==2.11.0"),
        Entry("torch-2.13.0", "torch==2.13.0"),
        Entry("torch-2.14.1", "torch==2.14.1"),
        Entry(f"torch-{newest}-py{OTHER_PYTHON}-oldest-wheel", f"torch=={newest}", python=OTHER_PYTHON, wheel="oldest"),
    ]


def insisted() -> bool:
    """CI names the matrix (FUSEDOPT_TORCH_MATRIX=all): there, a version that
    cannot be installed fails instead of skipping."""
    return bool(os.environ.get(MATRIX_VAR))


def find_python(version: str) -> str | None:
    """An interpreter of `version` (e.g. "3.12"): on PATH, or one of pyenv's."""
    candidates = [shutil.which(f"python{version}")]
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for c in filter(None, candidates):
        if subprocess.run([c, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0:
            return c
    return None


def suite_args(e: Entry, tests: Path) -> list[str]:
    """What pytest collects for an entry's suite in the copy `tests`."""
    if e.suite == "wide":
        return [str(tests)] + [f"--ignore={tests / f}" for f in SELF_CHECKS]
    return [str(tests / f) for f in TORCH_FACING]


class Failed(Exception):
    """A step of an entry failed: its name and output, for the test to show."""


class Unavailable(Exception):
    """A torch or Python that this machine cannot install (no network, no
    interpreter); a skip unless the matrix was insisted on."""


@dataclass
class Outcome:
    entry: Entry
    python: str = ""
    info: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    suite: str = ""
    oldest_wheel: Path | None = None


class Runner:
    """Runs every entry's steps in its own temporary venv, two entries at a time."""

    def __init__(self, newest_wheel: Path, work: Path):
        self.newest_wheel = newest_wheel
        self.work = work
        self.oldest_wheel: Future = Future()
        self.pool = ThreadPoolExecutor(2)
        self.lock = threading.Lock()  # the oldest wheel's outcome and the running commands
        self.running: set[subprocess.Popen] = set()
        self.closing = False
        self.seconds: dict[str, dict] = {}  # entry -> step -> wall seconds, for tuning CI's time
        self.futures = {e.name: self.pool.submit(self._run, e) for e in entries()}

    def result(self, name: str) -> Outcome:
        return self.futures[name].result()

    def report(self) -> list[dict]:
        """What each entry that ran had and did, for the README's compatibility table."""
        rows = []
        for name, fut in self.futures.items():
            seconds = {k: round(v, 1) for k, v in self.seconds.get(name, {}).items()}
            ran = fut.done() and not fut.cancelled()  # close() cancels the entries not yet started
            if not ran or fut.exception() is not None:
                rows.append({"entry": name, "error": str(fut.exception()) if ran else "not run",
                             "seconds": seconds})
                continue
            o = fut.result()
            rows.append({
                "entry": name,
                "torch": o.probe["torch"],
                "torch_cuda": o.probe["torch_cuda"],
                "python": o.python,
                "wheel_built_against": "this run's torch" if o.entry.wheel == "newest" else FLOOR,
                "cuda_library": "loaded" if o.probe["cuda_lib"]["loaded"] else o.probe["cuda_lib"]["reason"],
                "training_max_param_diff": max(r["max_param_diff"] for r in o.training["results"]),
                "suite": o.suite,
                "suite_files": o.entry.suite,
                "seconds": seconds,
            })
        return rows

    def close(self) -> None:
        """Stops what still runs (a session cut short: -x, Ctrl-C) and waits
        for the threads, which then fail their entries."""
        self._settle_oldest(exc=Failed("the floor's entry never built its wheel"))
        with self.lock:
            self.closing = True
            for proc in self.running:
                proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _settle_oldest(self, wheel: Path | None = None, exc: BaseException | None = None) -> None:
        """The oldest wheel's outcome, once: the first of the builder, its
        entry's end and close() decides it."""
        with self.lock:
            if self.oldest_wheel.done():
                return
            if exc is None:
                self.oldest_wheel.set_result(wheel)
            else:
                self.oldest_wheel.set_exception(exc)

    # -- one entry ------------------------------------------------------------

    def _run(self, e: Entry) -> Outcome:
        try:
            return self._steps(e)
        finally:
            if e.builds_oldest:
                self._settle_oldest(exc=Failed(f"{e.name} did not build the oldest wheel"))
            shutil.rmtree(self.work / e.name / "venv", ignore_errors=True)  # several GB each

    def _steps(self, e: Entry) -> Outcome:
        out = Outcome(e)
        where = self.work / e.name
        where.mkdir(parents=True)
        base = sys.executable if e.python is None else find_python(e.python)
        if base is None:
            raise Unavailable(f"no CPython {e.python} found (on PATH or under pyenv)")
        self._cmd(e, "make the venv", [base, "-m", "venv", str(where / "venv")], where)
        py = str(where / "venv" / "bin" / "python")
        # --no-compile: byte-compiling all of torch costs ~10 s a venv; the few
        # modules a run imports compile as it imports them
        got = self._cmd(e, f"pip install {e.torch_spec}",
                        [py, "-m", "pip", "install", "--quiet", "--no-compile", e.torch_spec], where, check=False)
        if got.returncode != 0:
            errors = " ".join(x for x in got.stderr.splitlines() if x.startswith("ERROR:"))
            raise Unavailable(f"could not install {e.torch_spec}: {errors[:400] or got.stderr[-400:]}")
        if e.builds_oldest:
            self._cmd(e, "pip install the build tools",
                      [py, "-m", "pip", "install", "--quiet", "--no-compile", "setuptools>=77", "wheel"], where)
        wheel = self.newest_wheel if e.wheel == "newest" else self.oldest_wheel.result()
        # the wheel and its test extra, as a user installs them: the torch present must satisfy them
        self._cmd(e, "pip install the wheel[test]",
                  [py, "-m", "pip", "install", "--quiet", "--no-compile", f"{wheel}[test]"], where)
        builder = None
        if e.builds_oldest:
            # beside this venv's own checks: the build reads the venv, where nothing
            # is installed from here on (first imports only add bytecode)
            builder = threading.Thread(target=self._build_oldest, args=(e, py, where), daemon=True)
            builder.start()
        try:
            out.python = self._cmd(e, "python version", [py, "-c", "import sys; print(sys.version.split()[0])"],
                                   where).stdout.strip()
            out.info = json.loads(self._cmd(e, "python -m fusedopt info", [py, "-m", "fusedopt", "info", "--json"],
                                            where).stdout)
            out.probe = json.loads(self._cmd(e, "CUDA library probe",
                                             [py, str(ROOT / "tests" / "wheel_cuda_probe.py")], where).stdout)
            out.training = json.loads(self._cmd(e, "short training", [py, str(ROOT / "tests" / "matrix_training.py")],
                                                where).stdout)
            out.suite = self._suite(e, py, where)
        finally:
            if builder is not None:
                builder.join()
        if builder is not None and self.oldest_wheel.exception() is not None:
            raise Failed(f"{e.name}: building the wheel against the oldest torch failed") from \
                self.oldest_wheel.exception()
        return out

    def _build_oldest(self, e: Entry, py: str, where: Path) -> None:
        """The wheel built against this venv's torch, as `make wheel` builds it
        but for one arch (OLDEST_WHEEL_ARCHS), from a copy of the sources (a
        build in the checkout would share its build/ folder with the main one).
        Its outcome goes to self.oldest_wheel (this runs in its own thread)."""
        try:
            src = where / "src"
            for part in ("csrc", "fusedopt"):
                shutil.copytree(ROOT / part, src / part,
                                ignore=shutil.ignore_patterns("__pycache__", "*.so", "_build_info.json"))
            for f in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
                shutil.copy(ROOT / f, src / f)
            self._cmd(e, "build the wheel against the oldest torch",
                      [py, "-m", "pip", "wheel", str(src), "--no-build-isolation", "--no-deps", "--wheel-dir",
                       str(where / "dist")], where, env={"TORCH_CUDA_ARCH_LIST": OLDEST_WHEEL_ARCHS})
            wheels = list((where / "dist").glob("fusedopt-*.whl"))
            if len(wheels) != 1:
                raise Failed(f"expected one wheel, found {wheels}")
            self._settle_oldest(wheel=wheels[0])
        except BaseException as exc:
            self._settle_oldest(exc=exc)

    def _suite(self, e: Entry, py: str, where: Path) -> str:
        """The CPU suite from a copy outside the source tree, so that it imports
        the installed wheel; the slow build tests are the main pass's."""
        copy = where / "suite"
        for part in ("tests", "csrc"):  # csrc: a host-side check compiles its headers
            shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", copy)  # the pytest configuration (markers)
        # the CUDA kernels under the CPU emulation compare kernels with kernels,
        # whatever the torch: the main pass runs them once
        res = self._cmd(e, "the CPU suite", [py, "-m", "pytest", "-q", "-m", "not slow and not cuda_emulated", "-p",
                                             "no:cacheprovider", *suite_args(e, copy / "tests")], copy, check=False)
        summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.returncode != 0 or " passed" not in summary or "failed" in summary or "error" in summary:
            raise Failed(f"{e.name}: the CPU suite: {summary}\n{res.stdout[-6000:]}\n{res.stderr[-2000:]}")
        return summary

    def _cmd(self, e: Entry, what: str, cmd: list[str], cwd: Path, check: bool = True,
             env: dict | None = None) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        with self.lock:
            if self.closing:
                raise Failed(f"{e.name}: {what}: not run (the session ended)")
            proc = subprocess.Popen(cmd, cwd=cwd, env={**clean_env(), **(env or {})}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            self.running.add(proc)
        try:
            stdout, stderr = proc.communicate()
        finally:
            with self.lock:
                self.running.discard(proc)
        res = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        self.seconds.setdefault(e.name, {})[what] = time.perf_counter() - start
        if self.closing:
            raise Failed(f"{e.name}: {what}: stopped (the session ended)")
        if check and res.returncode != 0:
            raise Failed(f"{e.name}: {what} exited with {res.returncode}:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
        return res
