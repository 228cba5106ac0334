"""The comparison runner behind `python -m fusedopt bench` and `make bench`.

    python -m fusedopt bench [--device cpu|cuda] [--step adamw|amp] [--workloads NAMES]
                             [--out FILE] [--plot FILE]

CPU, --step adamw (default): one AdamW step per implementation on 10x1M,
  1000x10K and 100x1K params (bench/cpu_step.py).
CPU, --step amp: the whole AMP + clip + AdamW step (bench/cpu_amp_step.py).
CUDA: the whole AMP + clip + AdamW step on model-shaped sets (bench/cuda_step.py).
Prints a table; writes JSON (and a PNG plot when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch

from .workloads import CPU_WORKLOADS, GPU_WORKLOADS


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def print_table(report: dict, baseline: str) -> None:
    print(f"{report['device']}  |  torch {report['torch']}  |  commit {report['commit']}")
    print(f"bandwidth probe: {report['probe_gbs']:.1f} GB/s ({report['probe']})")
    for wl, entry in report["results"].items():
        print(f"\n{wl}")
        print(f"  {'implementation':24s} {'median ms':>10s} {'vs ' + baseline:>18s} {'GB/s':>8s} {'% of probe':>11s}")
        for name, r in entry.items():
            speed = r[f"speedup_vs_{baseline.replace('-', '_')}"]
            print(f"  {name:24s} {r['median_ms']:10.3f} {speed:17.2f}x {r['gbs']:8.1f} {r['pct_of_probe']:10.0f}%")


def plot(report: dict, path: Path, baseline: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    wls = list(report["results"])
    impls = list(next(iter(report["results"].values())))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(wls), 3.6))
    width = 0.8 / len(impls)
    key = f"speedup_vs_{baseline.replace('-', '_')}"
    for i, name in enumerate(impls):
        vals = [report["results"][w][name].get(key, 0.0) for w in wls]
        ax.bar([x + i * width for x in range(len(wls))], vals, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(impls) - 1) / 2 for x in range(len(wls))], wls)
    ax.set_ylabel(f"speedup vs {baseline}")
    ax.set_title(f"{report['device']}, torch {report['torch']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedopt bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--step", choices=["adamw", "amp"], default="adamw",
                        help="CPU only: the optimizer step alone, or the whole AMP step")
    parser.add_argument("--workloads", help="comma-separated names (default: all for the device)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG bar chart here (needs matplotlib)")
    args = parser.parse_args(argv)

    table = CPU_WORKLOADS if args.device == "cpu" else GPU_WORKLOADS
    names = args.workloads.split(",") if args.workloads else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(table)}")
    wls = [table[n] for n in names]

    if args.device == "cpu" and args.step == "amp":
        from .cpu_amp_step import run

        report = run(wls, rounds=args.rounds, reps=args.reps)
        baseline = "torch-fused"
    elif args.device == "cpu":
        from .cpu_step import run

        report = run(wls, rounds=args.rounds, reps=args.reps)
        baseline = "torch-fused"
    else:
        from .cuda_step import run  # type: ignore[import-not-found]

        report = run(wls, rounds=args.rounds, reps=args.reps)
        baseline = "torch-fused"
    report["commit"] = _git_commit()
    print_table(report, baseline)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    if args.plot:
        print(f"wrote {args.plot}" if plot(report, args.plot, baseline) else "matplotlib not installed: no plot")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
