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
