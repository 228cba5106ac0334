"""The benchmark's rows for the params fusedopt's plain-torch fallback serves
(float64, complex64, transposed): they run in the AdamW step, with the
implementations that cannot take them left out, and their ratios taken to
torch's foreach AdamW where torch's fused one is what cannot."""

import dataclasses

import pytest
import torch

from fusedopt.benchmark import report, run, timing
from fusedopt.benchmark.measure import measure
from fusedopt.benchmark.steps import STEPS
from fusedopt.benchmark.workloads import DEFAULT_WORKLOADS, WORKLOADS

NAMES = ["torch-fused", "torch-foreach", "fusedopt-reference"]


@pytest.fixture(autouse=True)
def _no_probe(monkeypatch):
    """The bandwidth probe streams 256 MiB ten times a round; not what is tested here."""
    monkeypatch.setattr(timing.CpuTimer, "probe_gbs", lambda self, *args, **kwargs: 1.0)


def _tiny(name: str):
    """The workload with four 8x6 tensors: same dtype, layout and rules."""
    return dataclasses.replace(WORKLOADS[name], shapes=((8, 6),) * 4)


def test_the_fallback_rows_are_in_the_default_runs():
    for name in ("f64-1000x10K", "c64-1000x10K", "T-1000x10K"):
        assert name in DEFAULT_WORKLOADS["cpu"] and name in DEFAULT_WORKLOADS["cuda"]
        wl = WORKLOADS[name]
        params = _tiny(name).params()
        assert all(p.dtype is wl.dtype and p.grad.dtype is wl.dtype for p in params)
        assert all(p.is_contiguous() != wl.transposed for p in params)
        assert all(p.grad.stride() == p.stride() for p in params)


def test_complex_params_are_timed_against_torch_foreach():
    wl = _tiny("c64-1000x10K")
    result = measure(STEPS["adamw"], wl, NAMES, "cpu", rounds=1, reps=1)
    assert result["baseline"] == "torch-foreach"
    assert "torch-fused" in result["left_out"] and "torch-fused" not in result["results"]
    assert result["results"]["torch-foreach"]["speedup"] == 1.0
    assert result["results"]["fusedopt-reference"]["median_ms"] > 0
    # complex64 moves twice float32's bytes: the GB/s are counted on them
    r = result["results"]["torch-foreach"]
    assert abs(r["gbs"] * r["median_ms"] / 1e3 * 1e9 - 2 * 28 * wl.numel) < 1e-3 * 2 * 28 * wl.numel
    section = {"baseline": "torch-fused", "labels": {n: STEPS["adamw"].entries[n].label for n in NAMES},
               "title": "One AdamW step", "bytes_about": "b", "workloads": {wl.name: result}, "skipped": {},
               "highlight": []}
    rep = {"steps": {"adamw": section}, "rounds": 1, "reps": 1, "not_compared": {}, "command": "c", "probe": "p",
           "backend": {"native": True}, "device": "cpu", "torch": torch.__version__, "fusedopt": "x"}
    text, tables = report.text(rep), report.markdown(rep)
    assert "torch fused" in text and "left out: torch's fused AdamW takes no complex params" in text
    assert "(ratios to torch foreach here: torch's fused AdamW takes no complex params)" in text
    assert f"| {wl.name} | - | " in tables
    assert f"{wl.name}: ratios to torch foreach here: torch's fused AdamW takes no complex params" in tables


def test_float64_and_transposed_params_keep_torch_fused_as_baseline():
    for name in ("f64-1000x10K", "T-1000x10K"):
        result = measure(STEPS["adamw"], _tiny(name), NAMES, "cpu", rounds=1, reps=1)
        assert result["baseline"] == "torch-fused" and not result["left_out"]
        assert set(result["results"]) == set(NAMES)


def test_the_fallback_rows_skip_the_other_steps_with_a_note():
    wl = WORKLOADS["c64-1000x10K"]
    assert run._skipped("amp", wl, 4, "cpu") == "skipped: c64-1000x10K runs in the adamw step only"
    assert run._skipped("compile", wl, 4, "cpu") == "skipped: c64-1000x10K runs in the adamw step only"
    assert run._skipped("adamw", _tiny("c64-1000x10K"), 3, "cpu") is None
