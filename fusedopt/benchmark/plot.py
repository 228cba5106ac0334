"""The report as a picture: per step, each implementation's speedup over the
step's baseline on every workload (1.0 = as fast as torch's fused AdamW)."""

from __future__ import annotations

from pathlib import Path

from .environment import headline
from .report import warning


def matplotlib_missing() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); pip install 'fusedopt[bench]' for the plot"
    return None


def write(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [s for s in report["steps"].values() if s["workloads"]]
    widest = max(len(s["workloads"]) for s in sections)
    fig, axes = plt.subplots(len(sections), 1, figsize=(max(7.0, 2.2 + 1.5 * widest), 0.8 + 3.2 * len(sections)),
                             squeeze=False)
    # one colour per implementation in every panel
    every = list(dict.fromkeys(n for s in sections for n in s["labels"]))
    colour = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(every)}
    for ax, section in zip(axes[:, 0], sections):
        wls = list(section["workloads"])
        names = list(section["labels"])
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [x + i * width for x in range(len(wls))]
            vals = [section["workloads"][w]["results"].get(name, {}).get("speedup", 0.0) for w in wls]
            bars = ax.bar(xs, vals, width, label=section["labels"][name], color=colour[name],
                          edgecolor="black" if name in section["highlight"] else None)
            ax.bar_label(bars, [f"{v:.2f}" if v else "" for v in vals], fontsize=6, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(wls))], wls, fontsize=8)
        ax.set_ylabel(f"speedup vs {section['labels'][section['baseline']]}", fontsize=8)
        ax.set_title(section.get("short", section["title"]), fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    warn = warning(report)
    title = headline(report) + ("\nWARNING: fusedopt's native kernels were not loaded" if warn else "")
    fig.suptitle(title, fontsize=8, color="red" if warn else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
