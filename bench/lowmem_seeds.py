"""Several runs of bench/lowmem_quality.py (one per seed) read together: one run
decides nothing when two optimizers end a fraction of a percent apart, so this
prints each row's final validation loss relative to torch's fp32 AdamW of the
same seed (same weights, batches and validation text), per seed, with the mean,
and writes the summary as JSON.

    python -m bench.lowmem_seeds bench/results/lowmem-quality-cpu*.json --out bench/results/lowmem-seeds-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BASE = "torch AdamW fp32"


def summarize(reports: list[dict]) -> dict:
    """Per row: {seed: final val loss / the seed's torch fp32 loss - 1} and the
    mean. Reports of one seed (rows run separately) are read as one run."""
    hashes = {r["corpus"]["sha256"] for r in reports}
    if len(hashes) != 1:
        raise SystemExit(f"the runs trained on different corpora ({sorted(hashes)}): they do not compare")
    per_seed: dict[int, dict[str, float]] = {}
    for report in reports:
        seen = per_seed.setdefault(report["config"]["seed"], {})
        for r in report["rows"]:
            if r["name"] in seen:
                raise SystemExit(f"two runs of {r['name']!r} with seed {report['config']['seed']}")
            seen[r["name"]] = r["final_val_loss"]
    rows: dict[str, dict] = {}
    for seed, by_name in sorted(per_seed.items()):
        if BASE not in by_name:
            raise SystemExit(f"the runs with seed {seed} have no {BASE!r} row to compare with")
        for name, loss in by_name.items():
            row = rows.setdefault(name, {"final_val_loss": {}, "vs_base": {}})
            row["final_val_loss"][seed] = loss
            row["vs_base"][seed] = loss / by_name[BASE] - 1
    for row in rows.values():
        row["mean"] = statistics.fmean(row["vs_base"].values())
    return {"base": BASE, "steps": sorted({r["config"]["steps"] for r in reports}),
            "torch": sorted({r["torch"] for r in reports}), "rows": rows}


def table(summary: dict) -> str:
    seeds = sorted({s for row in summary["rows"].values() for s in row["vs_base"]})
    head = "| optimizer | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |"
    lines = [head, "|---|" + "---:|" * (len(seeds) + 1)]
    for name, row in summary["rows"].items():
        cells = [f"{100 * row['vs_base'][s]:+.2f}%" if s in row["vs_base"] else "-" for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * row['mean']:+.2f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="lowmem_quality JSON reports, one per seed")
    ap.add_argument("--out", type=Path, help="write the summary here as JSON")
    args = ap.parse_args(argv)
    summary = summarize([json.loads(p.read_text()) for p in args.reports])
    print(table(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
