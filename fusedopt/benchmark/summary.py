"""Turning per-round timings into the figures the reports carry."""

from __future__ import annotations

import statistics


def median(xs) -> float:
    return statistics.median(xs)


def summarize(per_round: dict[str, list[float]], bytes_moved: float, probe_gbs: float,
              baseline: str) -> dict:
    """per_round: implementation -> one time per round, in seconds. The
    speedup is the median of per-round ratios to the baseline, so a machine
    that drifts between rounds affects both sides alike."""
    entry = {}
    for name, ts in per_round.items():
        med_s = median(ts)
        gbs = bytes_moved / med_s / 1e9
        entry[name] = {
            "median_ms": med_s * 1e3,
            "speedup": median([a / b for a, b in zip(per_round[baseline], ts)]),
            "gbs": gbs,
            "pct_of_probe": 100 * gbs / probe_gbs,
            "rounds_ms": [t * 1e3 for t in ts],
        }
    return entry
