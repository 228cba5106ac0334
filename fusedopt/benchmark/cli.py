"""python -m fusedopt bench: fusedopt against torch (and other libraries), timed here.

    python -m fusedopt bench [--device cpu|cuda[:N]] [--step adamw,amp] [--workloads NAMES]
                             [--impls NAMES] [--rounds N] [--reps N]
                             [--out FILE.json] [--plot FILE.png | --no-plot] [--markdown FILE.md]
    python -m fusedopt bench --list                  workloads and implementations
    python -m fusedopt bench --render REPORT.json    tables (and --markdown, --plot) from a saved report

By default: on the GPU when there is one, else on the CPU, both steps
  adamw  one AdamW step alone
  amp    the whole AMP step: unscale + inf check + clip(1.0) + AdamW + scale update
         (fusedopt's fused loop, and torch's idiom with torch's or fusedopt's classes)
for torch's fused and foreach AdamW, fusedopt, and DeepSpeed CPUAdam / apex or
TransformerEngine FusedAdam where they import, on GPT-2 small, a 1B decoder
(where memory allows), 2000 small tensors and three synthetic sets. Writes the
report as JSON (fusedopt-bench-DEVICE.json here unless --out) and a PNG plot
beside it when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from . import plot, report
from .implementations import IMPLEMENTATIONS, backend_of
from .steps import STEPS
from .workloads import DEFAULT_WORKLOADS, WORKLOADS


class BadInput(Exception):
    """A request the runner refuses: the message says what to change."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusedopt bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--step", "--steps", dest="steps", default="adamw,amp",
                   help=f"comma-separated, from {', '.join(STEPS)} (default: both)")
    p.add_argument("--workloads", help="comma-separated names (default: the device's set; see --list)")
    p.add_argument("--impls", help="comma-separated implementations to compare with each step's baseline, "
                                   "which is always timed (default: every one that runs here; see --list)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; every implementation runs once per round")
    p.add_argument("--reps", type=int, help="timed calls per round (default: sized to each implementation's speed)")
    p.add_argument("--out", type=Path, help="the JSON report (default: fusedopt-bench-DEVICE.json)")
    p.add_argument("--plot", type=Path, help="the PNG plot (default: the report's path with .png)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("--markdown", type=Path, help="also write the tables as markdown (the README's format)")
    p.add_argument("--render", type=Path, metavar="REPORT", help="no measurement: show a saved report")
    p.add_argument("--list", action="store_true", help="list workloads and implementations, then exit")
    return p


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def resolve_device(arg: str | None) -> str:
    if arg is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = arg.partition(":")
    if arg == "cpu":
        return arg
    if kind != "cuda" or (index and not index.isdigit()):
        raise BadInput(f"--device {arg}: not a device this benchmark knows; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is a CPU-only build" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: "
                    "torch.cuda.is_available() is False")
        raise BadInput(f"--device {arg}: no CUDA device here: {why}")
    if index and int(index) >= torch.cuda.device_count():
        raise BadInput(f"--device {arg}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return arg


def resolve_workloads(arg: str | None, device: str) -> list[str]:
    names = _split(arg) if arg is not None else list(DEFAULT_WORKLOADS[device.split(":")[0]])
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise BadInput(f"--workloads: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                       f"choose from {', '.join(WORKLOADS)}")
    return names


def resolve_steps(arg: str) -> list[str]:
    names = _split(arg)
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise BadInput(f"--step: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                       f"choose from {', '.join(STEPS)}")
    return names


def resolve_entries(arg: str | None, steps: list[str], device: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The entries each step times (the baseline first), and the optional ones
    left out because their library does not import here."""
    native = backend_of(device)["native"]
    known = {n for s in steps for n in STEPS[s].entries}
    if arg is not None:
        wanted = _split(arg)
        for name in wanted:
            if name not in known:
                raise BadInput(f"--impls: unknown {name!r}; the {'/'.join(steps)} step(s) compare "
                               f"{', '.join(sorted(known))}")
            impl = next(STEPS[s].entries[name].impl for s in steps if name in STEPS[s].entries)
            why = impl.unavailable(device)
            if why:
                raise BadInput(f"--impls: {name} cannot run: {why}; install it, or leave it out of --impls"
                               if impl.library and impl.runs_on(device) else f"--impls: {name} {why}")
    not_compared: dict[str, str] = {}
    chosen: dict[str, list[str]] = {}
    for s in steps:
        names = [STEPS[s].baseline]
        for name, entry in STEPS[s].entries.items():
            if name == STEPS[s].baseline or (arg is not None and name not in wanted) or not entry.impl.runs_on(device):
                continue
            why = entry.impl.unavailable(device)
            if why:
                not_compared[name] = why
            elif native or not entry.native_only:
                names.append(name)
        chosen[s] = names
    return chosen, not_compared


def _list(device: str) -> int:
    print("workloads (default on this device marked *):")
    for wl in WORKLOADS.values():
        mark = "*" if wl.name in DEFAULT_WORKLOADS[device.split(":")[0]] else " "
        print(f"  {mark} {wl.name:11s} {wl.describe():32s} {wl.about}")
    for step in STEPS.values():
        print(f"\n{step.name}: {step.title}")
        for name, entry in step.entries.items():
            why = entry.impl.unavailable(device)
            print(f"  {name:20s} {entry.label:42s} {'not here: ' + why if why else 'runs here'}")
    return 0


def _write_outputs(rep: dict, args, out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rep, indent=2) + "\n")
        print(f"\nwrote {out}")
    plot_path = None
    if not args.no_plot and (args.plot or out is not None):
        plot_path = args.plot or out.with_suffix(".png")
        missing = plot.matplotlib_missing()
        if missing:
            print(f"no plot: {missing}")
            plot_path = None
        elif not any(s["workloads"] for s in rep["steps"].values()):
            plot_path = None
        else:
            plot.write(rep, plot_path)
            print(f"wrote {plot_path}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.markdown(rep, str(plot_path) if plot_path else None))
        print(f"wrote {args.markdown}")


def _render(args) -> int:
    try:
        rep = json.loads(args.render.read_text())
        rep["steps"]  # noqa: B018 - a report of this runner has them
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"--render {args.render}: not a report written by this runner ({exc})") from None
    print(report.text(rep))
    _write_outputs(rep, args, None)
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.render:
            return _render(args)
        device = resolve_device(args.device)
        if args.list:
            return _list(device)
        if args.rounds < 1 or (args.reps is not None and args.reps < 1):
            raise BadInput("--rounds and --reps must be at least 1")
        steps = resolve_steps(args.steps)
        workloads = resolve_workloads(args.workloads, device)
        entries, not_compared = resolve_entries(args.impls, steps, device)
    except BadInput as exc:
        parser.error(str(exc))
    from .run import run

    command = shlex.join(["python", "-m", "fusedopt", "bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        rep = run(device, steps, workloads, entries, args.rounds, args.reps, not_compared, command)
    except KeyboardInterrupt:
        print("\ninterrupted: no report written", file=sys.stderr)
        return 130
    print()
    print(report.text(rep))
    out = args.out or Path(f"fusedopt-bench-{device.replace(':', '')}.json")
    _write_outputs(rep, args, out)
    warn = report.warning(rep)
    if warn:
        print(f"\n!!! {warn}")
    errors = {wl for s in rep["steps"].values() for wl in s["errors"]}
    if errors:
        print(f"\nfailed: {', '.join(sorted(errors))} (see above)", file=sys.stderr)
        return 1
    if not any(s["workloads"] for s in rep["steps"].values()):
        print("\nnothing was measured: every workload was skipped (see above)", file=sys.stderr)
        return 1
    return 0
