"""The benchmark runner behind `make bench` runs end to end (on a tiny budget)
and writes a report with the figures the README quotes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # once, with the native kernels (the fallback run has no "fusedopt" entry)
@pytest.mark.parametrize("step", ["adamw", "amp"])
def test_cpu_bench_runs_and_reports(step, tmp_path):
    out = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, "-m", "fusedopt", "bench", "--device", "cpu", "--step", step, "--workloads", "100x1K",
         "--rounds", "1", "--reps", "2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    entry = report["results"]["100x1K"]
    assert {"torch-fused", "fusedopt"} <= entry.keys()
    for r in entry.values():
        assert r["median_ms"] > 0 and r["speedup_vs_torch_fused"] > 0 and r["pct_of_probe"] > 0
    assert entry["torch-fused"]["speedup_vs_torch_fused"] == 1.0
    assert report["probe_gbs"] > 0 and report["torch"]
    assert "100x1K" in res.stdout
