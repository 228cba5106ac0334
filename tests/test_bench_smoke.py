"""The benchmark runner behind `make bench` runs end to end on a tiny budget and
writes the report, tables and plot the README quotes; bad requests get a clear
message and no traceback; the bench/ pytest-benchmark suites still run on the
runner's pieces."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CUDA_KERNELS_OFF, NATIVE_CPU
from fusedopt.benchmark import cli, host_cost, implementations

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--workloads", "100x1K", "--rounds", "1", "--reps", "1"]


def _bench(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "fusedopt", "bench", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


def test_cpu_bench_runs_and_reports(tmp_path):
    out, md = tmp_path / "report.json", tmp_path / "tables.md"
    res = _bench(*TINY, "--out", str(out), "--markdown", str(md))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    report = json.loads(out.read_text())
    assert list(report["steps"]) == ["adamw", "amp"]
    adamw = report["steps"]["adamw"]["workloads"]["100x1K"]["results"]
    amp = report["steps"]["amp"]["workloads"]["100x1K"]["results"]
    # the reference row is there with or without the native kernels
    assert {"torch-fused", "torch-foreach", "fusedopt-reference"} <= adamw.keys()
    assert {"torch-fused", "torch-foreach", "fusedopt", "fusedopt-idiom"} <= amp.keys()
    for r in [*adamw.values(), *amp.values()]:
        assert r["median_ms"] > 0 and r["speedup"] > 0 and r["pct_of_probe"] > 0
    assert adamw["torch-fused"]["speedup"] == 1.0 and amp["torch-fused"]["speedup"] == 1.0
    assert report["probe_gbs"] > 0 and report["torch"] == torch.__version__
    assert "[1/1] 100x1K (0.1M params in 100 tensors): adamw done; amp done;" in res.stderr  # progress
    assert "100x1K" in res.stdout
    tables = md.read_text()
    assert "| workload | torch fused | torch foreach |" in tables
    assert tables.count("| 100x1K |") == 2
    try:
        import matplotlib  # noqa: F401

        png = out.with_suffix(".png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in tables
    except ImportError:
        assert "no plot: matplotlib is not installed" in res.stdout
    if NATIVE_CPU:
        assert report["backend"]["native"] and "fusedopt" in adamw
        assert "NOT running" not in res.stdout
    else:  # said loudly, with the reason, in the table, the report and the markdown
        assert not report["backend"]["native"] and "fusedopt" not in adamw
        assert "NOT running on this device: disabled by FUSEDOPT_DISABLE_NATIVE" in res.stdout
        assert "**Warning: fusedopt's native kernels are NOT running" in tables

    # the tables again from the saved report, without measuring
    again = _bench("--render", str(out), "--markdown", str(tmp_path / "again.md"), "--no-plot")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.md").read_text() == tables.replace(f"\n\n![speedup over torch's fused AdamW, per "
                                                                  f"step and workload]({out.with_suffix('.png')})", "")


def _refused(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--workloads", "100x1K,gpt3"], "--workloads: unknown 'gpt3'; choose from gpt2-124M,"),
    (["--step", "adamw,sgd"], "--step: unknown 'sgd'; choose from adamw, amp"),
    (["--impls", "torch-fused,lion"], "--impls: unknown 'lion'"),
    (["--impls", "fusedopt-idiom", "--step", "adamw"], "--impls: unknown 'fusedopt-idiom'"),
    (["--device", "cpu", "--impls", "apex-fused-adam"], "--impls: apex-fused-adam runs on cuda only"),
    (["--device", "tpu"], "--device tpu: not a device this benchmark knows; use cpu, cuda or cuda:N"),
    (["--rounds", "0"], "--rounds and --reps must be at least 1"),
])
def test_bad_requests_are_refused_with_the_reason(capsys, argv, message):
    assert message in _refused(capsys, argv)


def test_an_absent_device_is_refused(capsys):
    absent = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    err = _refused(capsys, ["--device", absent, "--workloads", "100x1K"])
    if torch.cuda.is_available():
        assert f"this machine has {torch.cuda.device_count()} CUDA device(s)" in err
    elif torch.version.cuda is None:
        assert f"--device cuda: no CUDA device here: this torch ({torch.__version__}) is a CPU-only build" in err
    else:  # a CUDA build of torch on a machine without a GPU
        assert (f"--device cuda: no CUDA device here: torch {torch.__version__} (CUDA {torch.version.cuda}) "
                "sees no GPU: torch.cuda.is_available() is False") in err


def test_a_missing_optional_library_is_named(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed now fails, as where it is absent
    implementations._import.cache_clear()
    try:
        err = _refused(capsys, ["--device", "cpu", "--impls", "deepspeed-cpu-adam"])
        assert "--impls: deepspeed-cpu-adam cannot run: DeepSpeed (deepspeed.ops.adam.DeepSpeedCPUAdam) " \
               "is not importable here (ModuleNotFoundError" in err
        assert "install it, or leave it out of --impls" in err
        # by default the run goes on without it, and says so
        _, not_compared = cli.resolve_entries(None, ["adamw"], "cpu")
        assert "is not importable here" in not_compared["deepspeed-cpu-adam"]
    finally:
        implementations._import.cache_clear()


@pytest.mark.slow  # once: the native library plays no part in refusing
def test_refusals_from_the_command_line_carry_no_traceback(tmp_path):
    fake = tmp_path / "site" / "deepspeed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('this DeepSpeed is broken on purpose')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    for args, message in (
        (["--workloads", "nope"], "unknown 'nope'"),
        (["--device", "cpu", "--impls", "deepspeed-cpu-adam"], "this DeepSpeed is broken on purpose"),
        (["--render", str(tmp_path / "missing.json")], "not a report written by this runner"),
    ):
        res = _bench(*args, env=env)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_workload_that_does_not_fit_is_skipped_with_a_message():
    from fusedopt.benchmark.memory import plan
    from fusedopt.benchmark.steps import AMP
    from fusedopt.benchmark.workloads import WORKLOADS

    wl = WORKLOADS["decoder-1B"]
    assert plan(AMP, wl, 4, "cpu", free=24 << 30).mode == "skip"
    note = plan(AMP, wl, 4, "cpu", free=24 << 30).note
    assert note.startswith("skipped: one implementation needs ~") and "cpu has 25.8 GB free" in note
    assert plan(AMP, wl, 4, "cpu", free=80 << 30).mode == "one-at-a-time"
    assert plan(AMP, wl, 4, "cpu", free=400 << 30).mode == "resident"


@pytest.mark.slow  # once, with the native kernels
def test_the_pytest_benchmark_suites_run_on_the_runner():
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "bench", "--benchmark-disable", "--workloads", "100x1K",
         "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert " passed" in res.stdout and "failed" not in res.stdout


@pytest.mark.slow  # inductor compiles torch's step for tens of seconds on a small machine
def test_cpu_compile_step_runs_and_reports(tmp_path):
    out = tmp_path / "report.json"
    res = _bench(*TINY, "--step", "compile", "--out", str(out), "--no-plot")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert list(report["steps"]) == ["compile"]
    w = report["steps"]["compile"]["workloads"]["100x1K"]
    expected = {"torch-compiled", "torch-fused"} | ({"fusedopt-compiled", "fusedopt"} if NATIVE_CPU else set())
    assert expected <= w["results"].keys()
    assert w["results"]["torch-compiled"]["speedup"] == 1.0  # the compiled step's baseline
    assert all(r["median_ms"] > 0 for r in w["results"].values())
    assert all(w["first_call_s"][n] > 0 for n in expected)
    assert "first call (tracing and compiling): torch compiled" in res.stdout


@pytest.mark.cuda
def test_cuda_bench_runs_and_reports(tmp_path):
    out = tmp_path / "report.json"
    res = _bench("--device", "cuda", "--workloads", "100x1K,2000x4096", "--rounds", "1", "--reps", "2",
                 "--out", str(out), "--no-plot")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert report["probe"].startswith("device-to-device copy") and report["capability"].startswith("sm_")
    assert report["backend"]["native"] == (not CUDA_KERNELS_OFF), report["backend"]
    for step in ("adamw", "amp"):
        ours = "fusedopt" if step == "amp" or not CUDA_KERNELS_OFF else "fusedopt-reference"
        for wl in ("100x1K", "2000x4096"):
            results = report["steps"][step]["workloads"][wl]["results"]
            assert {"torch-fused", "torch-foreach", ours} <= results.keys()
            assert all(r["median_ms"] > 0 and r["pct_of_probe"] > 0 for r in results.values())


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the command measures on one thread


@pytest.mark.parametrize("amp", [False, True])
def test_host_cost_runs_and_reports(tmp_path, capsys, keep_threads, amp):
    out = tmp_path / "host.json"
    args = ["--small", "4", "--large", "40", "--rounds", "1", "--budget", "400", "--out", str(out)]
    assert host_cost.main(args + (["--amp"] if amp else [])) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == set(host_cost.IMPLS) | (set(host_cost.AMP_IMPLS) if amp else set())
    for r in report["results"].values():
        assert math.isfinite(r["us_per_tensor"]) and math.isfinite(r["ratio_to_torch_fused"])
    assert "host cost per tensor" in capsys.readouterr().out


def test_host_cost_refuses_a_bad_range(capsys):
    with pytest.raises(SystemExit) as exc:
        host_cost.main(["--small", "50", "--large", "10"])
    assert exc.value.code == 2
    assert "--small must be positive and below --large" in capsys.readouterr().err
