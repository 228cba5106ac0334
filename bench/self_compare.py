"""How far runs of the suite on one commit move from each other: the noise a
"before and after" comparison has to beat.

    python -m bench.self_compare .benchmarks/*/0001_a.json .benchmarks/*/0002_b.json ...

Each run after the first is compared with the first, row by row (same test):
the change of the median time and of the speedup over torch fused. Prints
every row and, per run, the largest and the median change of each.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _rows(path: Path) -> tuple[dict, dict]:
    data = json.loads(path.read_text())
    rows = {b["fullname"].split("[", 1)[-1].rstrip("]"): b["extra_info"] for b in data["benchmarks"]}
    return data.get("fusedopt_bench", {}), rows


def _load(info: dict) -> str:
    load = info.get("load_average_1min") or {}
    return f"load {load['start']:.1f}->{load['end']:.1f}" if load.get("start") is not None else "load unknown"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip())
        return 2
    first_info, first = _rows(Path(argv[0]))
    print(f"reference: {argv[0]} ({_load(first_info)})")
    for other in argv[1:]:
        info, rows = _rows(Path(other))
        dt, dr = [], []
        print(f"\n{other} ({_load(info)}) against the reference:")
        print(f"  {'row':42s} {'time':>8s} {'vs torch':>9s}")
        for name, a in first.items():
            b = rows.get(name)
            if b is None:
                continue
            t = 100 * (b["median_ms"] / a["median_ms"] - 1)
            dt.append(abs(t))
            line = f"  {name:42s} {t:+7.1f}%"
            if a["implementation"] != a["baseline"]:
                r = 100 * (b["speedup"] / a["speedup"] - 1)
                dr.append(abs(r))
                line += f" {r:+8.1f}%"
            print(line)
        print(f"  largest change: time {max(dt):.1f}%, speedup {max(dr):.1f}%; "
              f"median change: time {statistics.median(dt):.1f}%, speedup {statistics.median(dr):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
