"""The low-memory quality harness (bench/lowmem_quality.py) on a seconds-long
run: every row starts from the same weights and sees the same batches, so two
rows of the same optimizer give the same curves, a real optimizer lowers the
validation loss, and the report and plot are written."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("transformers")
sys.path.insert(0, str(ROOT))
from bench import lowmem_quality as lq  # noqa: E402

sys.path.pop(0)


def test_rows_are_comparable_and_learn():
    adamw = lq.optimizers()["torch AdamW fp32"]
    sgd = lambda p, cfg: torch.optim.SGD(p, lr=cfg.lr)  # noqa: E731
    report = lq.run(lq.TINY, names=["torch AdamW fp32", "again", "sgd"], extra={"again": adamw, "sgd": sgd})
    first, again, other = report["rows"]
    assert first["train_curve"] == again["train_curve"] and first["val_curve"] == again["val_curve"]
    assert other["train_curve"][0] == first["train_curve"][0]  # same weights, same first batch
    assert other["train_curve"] != first["train_curve"]
    assert len(first["train_curve"]) == lq.TINY.steps
    assert [s for s, _ in first["val_curve"]] == [0, 2, 4]
    assert first["final_val_loss"] < first["val_curve"][0][1]
    assert first["state_bytes_per_param"] == pytest.approx(8, rel=0.01)  # exp_avg + exp_avg_sq (+ steps)
    assert again["val_loss_vs_first"] == 0
    # the measured step: params + fp32 states resident, activations and grads on top
    assert first["resident_bytes"] == first["params"] * (4 + 8) + 4 * len(list(lq.make_model(lq.TINY, 2).parameters()))
    assert first["step_peak_bytes"] > first["resident_bytes"] + 4 * first["params"]  # at least the grads
    assert first["step_peak_bytes"] == again["step_peak_bytes"]


def test_cli_writes_report_and_plot(tmp_path, capsys):
    out = tmp_path / "quality.json"
    assert lq.main(["--tiny", "--steps", "2", "--only", "torch AdamW fp32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["steps"] == 2 and report["corpus"]["chars"] == lq.TINY.corpus_chars
    assert [r["name"] for r in report["rows"]] == ["torch AdamW fp32"]
    assert math.isfinite(report["rows"][0]["final_val_loss"])
    assert "| torch AdamW fp32 |" in capsys.readouterr().out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert out.with_suffix(".png").stat().st_size > 0


def test_unknown_row_is_refused():
    with pytest.raises(SystemExit, match="unknown or unavailable optimizer"):
        lq.run(lq.TINY, names=["no such optimizer"])


def test_seeds_summary_compares_each_seed_with_its_own_base():
    from dataclasses import replace

    from bench import lowmem_seeds

    sgd = lambda p, cfg: torch.optim.SGD(p, lr=cfg.lr)  # noqa: E731
    reports = [lq.run(replace(lq.TINY, seed=s), names=["torch AdamW fp32", "sgd"], extra={"sgd": sgd})
               for s in (0, 1)]
    summary = lowmem_seeds.summarize(reports)
    row = summary["rows"]["sgd"]
    for report, seed in zip(reports, (0, 1)):
        base, other = (r["final_val_loss"] for r in report["rows"])
        assert row["vs_base"][seed] == pytest.approx(other / base - 1)
    assert reports[0]["rows"][0]["final_val_loss"] != reports[1]["rows"][0]["final_val_loss"]  # seeds differ
    assert row["mean"] == pytest.approx(sum(row["vs_base"].values()) / 2)
    assert summary["rows"]["torch AdamW fp32"]["mean"] == 0
    assert "| sgd |" in lowmem_seeds.table(summary)
    # rows run separately (one report per row) read as one run of their seed
    split = [{**r, "rows": [row]} for r in reports for row in r["rows"]]
    assert lowmem_seeds.summarize(split)["rows"] == summary["rows"]
    with pytest.raises(SystemExit, match="two runs of 'sgd' with seed 0"):
        lowmem_seeds.summarize(split + split[1:2])
    reports[1]["corpus"]["sha256"] = "other"
    with pytest.raises(SystemExit, match="different corpora"):
        lowmem_seeds.summarize(reports)
