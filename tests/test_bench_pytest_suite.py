"""The pytest-benchmark suite (bench/) as a user runs it, in its smallest form
(one small workload, four rounds): groups per step and workload, one unit per
table, every figure pytest-benchmark holds is a round the runner measured,
the ratio to torch fused taken round by round, and a saved run compared with
a new one shown side by side, fusedopt vs torch before and after. No timing
is asserted: what is checked is that the figures are the measured ones and
reach every table."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NATIVE_CPU

# the suite needs the bench extra's pytest-benchmark and the bench/ folder beside
# tests/ (the torch matrix's venvs install the wheel with [test] only)
pytest.importorskip("pytest_benchmark", reason="pytest-benchmark (the bench extra) runs the bench/ suite")
ROOT = Path(__file__).resolve().parent.parent
if not (ROOT / "bench" / "conftest.py").exists():
    pytest.skip("no bench/ suite beside these tests (a copy of tests/ alone)", allow_module_level=True)
WORKLOAD = "100x1K"
ROUNDS = 4  # the fewest with an IQR in the summary
# the suite's default rows (bench/selection.py); without the native kernels
# the AdamW step's fusedopt row is left out, its fallback row stays
EXPECTED = {
    "adamw": {"torch-fused", "torch-foreach", "fusedopt-reference"} | ({"fusedopt"} if NATIVE_CPU else set()),
    "amp": {"torch-fused", "torch-foreach", "fusedopt", "fusedopt-idiom"},
}


def _suite(storage: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "--benchmark-only",
         "--workloads", WORKLOAD, "--bench-rounds", str(ROUNDS), f"--benchmark-storage=file://{storage}", *args],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


def _row(stdout: str, step: str, label: str) -> list[str]:
    """The cells after `label` in the summary's table of `step` on WORKLOAD."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{step}: ") and f"; {WORKLOAD} (" in line)
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = line[len(label):].split()
        if line.startswith(label) and cells and cells[0].replace(".", "").isdigit():
            return cells
    raise AssertionError(f"no row {label!r} in the {step} table:\n{stdout}")


def test_a_saved_run_and_a_compared_run_read_as_fusedopt_vs_torch(tmp_path):
    first = _suite(tmp_path, "--benchmark-save=first", "--benchmark-save-data")
    (saved_path,) = tmp_path.glob("*/0001_first.json")
    saved = json.loads(saved_path.read_text())
    rows = {(b["extra_info"]["step"], b["extra_info"]["implementation"]): b for b in saved["benchmarks"]}
    assert {(s, i) for s, impls in EXPECTED.items() for i in impls} == rows.keys()
    for (step, impl), b in rows.items():
        info = b["extra_info"]
        assert b["group"] == f"{step}: {WORKLOAD}" and b["fullname"].endswith(f"[{WORKLOAD}-{step}-{impl}]")
        # pytest-benchmark holds exactly the rounds measured, nothing of its own
        assert b["options"]["timer"] == "recorded_rounds"
        assert b["stats"]["data"] == [ms / 1e3 for ms in info["rounds_ms"]] and b["stats"]["rounds"] == ROUNDS
        # the ratio to torch fused is taken round by round, from rounds measured together
        base = rows[(step, "torch-fused")]["extra_info"]["rounds_ms"]
        per_round = [t0 / t for t0, t in zip(base, info["rounds_ms"])]
        assert info["round_speedups"] == per_round and info["speedup"] == statistics.median(per_round)
        assert info["baseline"] == "torch-fused" and info["burst"] >= 1 and info["median_ms"] > 0
        assert info["method"] == "call by call"
    assert rows[("adamw", "torch-fused")]["extra_info"]["speedup"] == 1.0
    run = saved["fusedopt_bench"]
    assert run["rounds"] == ROUNDS and f"--bench-rounds {ROUNDS}" in run["command"]
    assert run["threads"] == 1 and run["measure_seconds"][WORKLOAD] > 0

    out = first.stdout
    for step, impls in EXPECTED.items():  # pytest-benchmark's table: one per group, in milliseconds
        assert f"benchmark '{step}: {WORKLOAD}': {len(impls)} tests" in out
    assert out.count("Name (time in ms)") == 2 and "(time in us)" not in out
    # the suite's summary: every row with its time and its speedup over torch fused
    assert "each implementation's median time (ms) and its speedup over torch fused" in out
    for (step, impl), b in rows.items():
        info = b["extra_info"]
        cells = _row(out, step, info["label"])
        assert cells[:2] == [f"{info['median_ms']:.3f}", f"{info['speedup']:.2f}x"], cells

    # a second run, compared with the first: the saved figures beside the new ones
    second = _suite(tmp_path, "--benchmark-compare=0001", "-k", "adamw")
    out = second.stdout
    assert f"benchmark 'adamw: {WORKLOAD}': {2 * len(EXPECTED['adamw'])} tests" in out  # pytest-benchmark: both runs' rows
    assert "0001_first: commit " in out and "now: commit " in out and "amp: " not in out
    for impl in EXPECTED["adamw"]:
        before = rows[("adamw", impl)]["extra_info"]
        cells = _row(out, "adamw", before["label"])
        assert cells[:2] == [f"{before['median_ms']:.3f}", f"{before['speedup']:.2f}x"], cells
        # then this run's time, speedup (and rounds' range), the change of the
        # time and, but for torch fused itself, of the speedup
        changes = cells[4:] if impl == "torch-fused" else cells[5:]
        assert len(changes) == (1 if impl == "torch-fused" else 2), cells
        assert all(c.endswith("%") for c in changes), cells


def test_an_unknown_workload_is_refused_with_the_choices():
    res = subprocess.run([sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "--collect-only",
                          "--workloads", "100x1K,gpt3"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0
    assert "--workloads: unknown ['gpt3']; choose from gpt2-124M," in res.stdout + res.stderr
