"""A report as text for the terminal, and as the README's markdown tables."""

from __future__ import annotations

from .environment import headline


def warning(report: dict) -> str | None:
    """The loud line for a run whose fusedopt rows are not fusedopt's kernels."""
    b = report["backend"]
    if b["native"]:
        return None
    return (f"fusedopt's native kernels are NOT running on this device: {b['reason']}. The fusedopt rows "
            "below are its plain-torch fallback, and the AdamW step's \"fusedopt\" row is left out "
            "(the fusedopt-reference row is that fallback).")


def text(report: dict) -> str:
    lines = [f"fusedopt benchmark: {headline(report)}"]
    if report.get("probe_gbs"):
        lines.append(f"bandwidth probe: {report['probe_gbs']:.1f} GB/s ({report['probe']})")
    lines.append(f"{report['rounds']} rounds, reps {report['reps']}; each ratio is the median over rounds of "
                 "the ratio to the step's baseline in the same round")
    warn = warning(report)
    if warn:
        lines += ["", "!" * 78, f"!!! {warn}", "!" * 78]
    for name, why in report["not_compared"].items():
        lines.append(f"not compared: {name}: {why}")
    for section in report["steps"].values():
        lines += ["", f"{section['title']} (GB/s counted on {section['bytes_about']})",
                  f"  {'workload':12s} {'implementation':42s} {'median ms':>10s} {'vs ' + section['baseline']:>15s} "
                  f"{'GB/s':>7s} {'% of probe':>10s}"]
        for wl, w in section["workloads"].items():
            first = True
            for name, r in w["results"].items():
                label = section["labels"].get(name, name)
                lines.append(f"  {wl if first else '':12s} {label:42s} {r['median_ms']:10.3f} {r['speedup']:14.2f}x "
                             f"{r['gbs']:7.1f} {r['pct_of_probe']:9.0f}%")
                first = False
            for name, why in w.get("failed", {}).items():
                lines.append(f"  {'':12s} {section['labels'][name]:42s} failed: {why}")
            for name, why in w.get("left_out", {}).items():
                lines.append(f"  {'':12s} {section['labels'][name]:42s} left out: {why}")
            note = _baseline_note(section, w)
            if note:
                lines.append(f"  {'':12s} ({note})")
            compiled = {n: t for n, t in w.get("first_call_s", {}).items() if n.endswith("-compiled")}
            if compiled:
                lines.append(f"  {'':12s} first call (tracing and compiling): "
                             + ", ".join(f"{section['labels'][n]} {t:.1f} s" for n, t in compiled.items()))
        for wl, why in {**section["skipped"], **section.get("errors", {})}.items():
            lines.append(f"  {wl:12s} {why}")
    return "\n".join(lines)


def _baseline_note(section: dict, w: dict) -> str | None:
    """Where a workload's ratios are not to the step's baseline (which cannot take its params)."""
    used = w.get("baseline", section["baseline"])
    if used == section["baseline"]:
        return None
    why = w.get("left_out", {}).get(section["baseline"], "")
    return f"ratios to {section['labels'].get(used, used)} here: {why}"


def _cell(r: dict, bold: bool) -> str:
    s = f"{r['median_ms']:.2f} ms ({r['speedup']:.2f}x, {r['pct_of_probe']:.0f}%)"
    return f"**{s}**" if bold else s


def markdown(report: dict, plot_path: str | None = None) -> str:
    """One table per step, workloads as rows, implementations as columns, each
    cell `median ms (ratio to the baseline, % of the probe)`, fusedopt's own
    way in bold: the format of the README's tables."""
    out = [f"Measured with `{report['command']}`: {headline(report)}; {report['rounds']} rounds, "
           f"repetitions per round {report['reps']}. Each cell: median time (the median of per-round ratios "
           f"to the first column, % of a bandwidth probe measured in the same process: {report['probe']}"
           + (f", {report['probe_gbs']:.1f} GB/s" if report.get("probe_gbs") else "") + ")."]
    warn = warning(report)
    if warn:
        out += ["", f"**Warning: {warn}**"]
    for section in report["steps"].values():
        cols = list(section["labels"])
        out += ["", f"{section['title']} (GB/s counted on {section['bytes_about']}):", "",
                "| workload | " + " | ".join(section["labels"][c] for c in cols) + " |",
                "|---" * (len(cols) + 1) + "|"]
        for wl, w in section["workloads"].items():
            cells = [_cell(w["results"][c], c in section["highlight"]) if c in w["results"] else "-"
                     for c in cols]
            out.append(f"| {wl} | " + " | ".join(cells) + " |")
        left_out = {**section["skipped"], **section.get("errors", {})}
        left_out.update({wl: note for wl, w in section["workloads"].items() if (note := _baseline_note(section, w))})
        if left_out:
            out += [""] + [f"{wl}: {why}" for wl, why in left_out.items()]
    if plot_path:
        out += ["", f"![speedup over torch's fused AdamW, per step and workload]({plot_path})"]
    return "\n".join(out) + "\n"
