"""Turning per-round timings into the figures the reports carry."""

from __future__ import annotations


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def summarize(per_round: dict[str, list[float]], bytes_moved: float, probe_gbs: float,
              baseline: str = "torch-fused", unit_s: float = 1.0) -> dict:
    """per_round: implementation -> one time per round (in units of unit_s
    seconds). The speedup is the median of per-round ratios to the baseline, so
    a machine that drifts between rounds affects both sides alike."""
    entry = {}
    for name, ts in per_round.items():
        med_s = median(ts) * unit_s
        gbs = bytes_moved / med_s / 1e9
        entry[name] = {
            "median_ms": med_s * 1e3,
            f"speedup_vs_{baseline.replace('-', '_')}": median(a / b for a, b in zip(per_round[baseline], ts)),
            "gbs": gbs,
            "pct_of_probe": 100 * gbs / probe_gbs,
        }
    return entry
