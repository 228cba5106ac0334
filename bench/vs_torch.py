"""The suite's own summary: per step and workload, each implementation's time
and its speedup over torch fused from the same interleaved rounds; with
--benchmark-compare, the compared run's figures beside this run's: fusedopt
vs torch, before and after.

Rows are pytest-benchmark's benchmark dicts (fullname, extra_info, stats), of
this run or of a saved one; a run saved before the suite recorded its ratios
shows its time and no ratio.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from fusedopt.benchmark.steps import STEPS
from fusedopt.benchmark.workloads import WORKLOADS

from .selection import BASELINE


@dataclass
class Source:
    label: str  # "now", or the saved run's name
    info: dict | None  # the suite's run record (conftest.run_record), None for a run saved without it
    commit: dict | None  # pytest-benchmark's commit_info
    rows: dict  # fullname -> benchmark dict

    def about(self) -> str:
        """When, where and under what load it was measured, and the command."""
        commit = f"commit {self.commit['id'][:10]}{' (dirty)' if self.commit.get('dirty') else ''}, " \
            if self.commit and self.commit.get("id") else ""
        if not self.info:
            return f"{commit}saved without the suite's run record"
        i = self.info
        load = i["load_average_1min"]
        threads = f"{i['threads']} CPU thread{'s' if i['threads'] != 1 else ''}, " if i.get("threads") else ""
        when = f", load average {load['start']:.1f} at the start, {load['end']:.1f} at the end" \
            if load.get("start") is not None else ""
        return (f"{commit}{i['device']}, torch {i['torch']}, {threads}{i['rounds']} rounds{when}; measuring took "
                f"{sum(i['measure_seconds'].values()):.0f} s; `{i['command']}`")


# what must match for two runs' ratios to be compared
_SETTINGS = ("device", "threads", "torch")


def _pct(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.0f}%"


def _figures(bench: dict | None) -> tuple[str, str]:
    """(median ms, 'speedup x') cells of one row of one source."""
    if bench is None:
        return "-", "-"
    info = bench.get("extra_info", {})
    ms = info.get("median_ms", bench.get("stats", {}).get("median", float("nan")) * 1e3)
    speedup = info.get("speedup")
    return f"{ms:.3f}", "-" if speedup is None else f"{speedup:.2f}x"


def _spread(bench: dict) -> str:
    """The middle half of the per-round ratios (first to third quartile)."""
    per_round = bench["extra_info"].get("round_speedups") or []
    if len(per_round) < 4 or bench["extra_info"].get("implementation") == BASELINE:
        return ""
    q1, _, q3 = statistics.quantiles(per_round, n=4)
    return f"{q1:.2f}-{q3:.2f}"


def _change(now: dict, before: dict | None) -> tuple[str, str]:
    if before is None:
        return "-", "-"
    a, b = now["extra_info"], before.get("extra_info", {})
    t_before = b.get("median_ms", before.get("stats", {}).get("median", float("nan")) * 1e3)
    ratio = "" if a["implementation"] == BASELINE else (
        _pct(a["speedup"], b["speedup"]) if b.get("speedup") else "-")
    return _pct(a["median_ms"], t_before), ratio


def tables(now: Source, before: list[Source], rounds_about: str) -> list[str]:
    """The summary's lines: one table per (step, workload) group of this run."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for bench in now.rows.values():
        info = bench["extra_info"]
        groups.setdefault((info["step"], info["workload"]), []).append(bench)
    out = [
        "Per step and workload: each implementation's median time (ms) and its speedup over torch fused: torch "
        f"fused's time over the row's in each round, median over {rounds_about} (IQR: the middle half of the "
        "rounds' ratios). Implementations alternate call by call, so a change of load hits them alike: compare "
        "runs by the speedup; absolute times follow the machine's load (README, \"Comparing commits\").",
        *(f"  {s.label}: {s.about()}" for s in [*before, now]),
    ]
    for s in before:
        differ = [k for k in _SETTINGS if s.info and s.info.get(k) != now.info.get(k)]
        if differ:
            out.append(f"  note: {s.label} and {now.label} differ in {', '.join(differ)}: their figures measure "
                       "different things")
    step_order, wl_order = list(STEPS), list(WORKLOADS)
    for step, workload in sorted(groups, key=lambda g: (step_order.index(g[0]), wl_order.index(g[1]))):
        rows = groups[(step, workload)]
        names = list(STEPS[step].entries)
        rows.sort(key=lambda b: (b["extra_info"]["implementation"] != BASELINE,
                                 names.index(b["extra_info"]["implementation"])))
        label_w = max(len("implementation"), *(len(STEPS[step].entries[b["extra_info"]["implementation"]].label)
                                               for b in rows))
        head = [f"{'implementation':{label_w}s}"]
        for s in before:
            head.append(f"{'ms':>10s} {'vs torch':>9s}")
        head.append(f"{'ms':>10s} {'vs torch':>9s} {'(IQR)':>11s}")
        if before:
            head.append(f"{'time':>7s} {'vs torch':>9s}")
        titles = " " * label_w + "".join(f" {s.label[:20]:>20s}" for s in before) + f" {now.label[:32]:>32s}"
        if before:
            titles += f" {'change':>17s}"
        out += ["", f"{step}: {STEPS[step].title}; {workload} ({WORKLOADS[workload].describe()})", titles,
                " ".join(head)]
        for bench in rows:
            impl = bench["extra_info"]["implementation"]
            cells = [f"{STEPS[step].entries[impl].label:{label_w}s}"]
            for s in before:
                ms, x = _figures(s.rows.get(bench["fullname"]))
                cells.append(f"{ms:>10s} {x:>9s}")
            ms, x = _figures(bench)
            cells.append(f"{ms:>10s} {x:>9s} {_spread(bench):>11s}")
            if before:
                t, r = _change(bench, before[-1].rows.get(bench["fullname"]))
                cells.append(f"{t:>7s} {r:>9s}")
            out.append(" ".join(cells))
    if before:
        out += ["", f"change: {now.label} against {before[-1].label}; time: of the median time, vs torch: of the "
                "speedup over torch fused (+: fusedopt or the row gained on torch)."]
    return out
