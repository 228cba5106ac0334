"""The host cost of a step per tensor: what each extra parameter tensor adds to
an optimizer step's time when its elements cost nothing.

    python -m fusedopt.benchmark.host_cost [--small 20] [--large 2000] [--rounds 7] [--device cpu] [--amp]
                                           [--out FILE]

Each implementation steps `small` and then `large` one-element params (with
grads) on one thread; the cost per tensor is the slope between the two, so the
step's fixed cost drops out. What remains is the per-tensor work on the host:
Python, the dispatcher, argument checks, tables, launches. On a GPU it decides
how many tensors a step can have before the host, not the kernel, sets its
time. ``--amp`` adds the whole AMP step (inf check, clip, AdamW, scale update)
three ways: torch's idiom with torch's classes, fusedopt's fused loop, and
torch's idiom with fusedopt's classes. Implementations alternate within each round; each figure is the median
over rounds, and each ratio the median of per-round ratios to torch's fused
AdamW.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import fusedopt

from .environment import cpu_description
from .summary import median

class AmpStep:
    """A whole AMP step (scale bookkeeping, inf check, clip to norm 1, AdamW)
    as one ``step()``: fusedopt's fused loop (the optimizer clips and finds
    infs) or torch's idiom (unscale_, clip_grad_norm_, step) with either
    library's classes. The scale stays 1 (no growth), so the grads keep their
    values from step to step."""

    def __init__(self, opt, idiom: bool, torch_classes: bool = False) -> None:
        self.opt, self.idiom = opt, idiom
        self.params = [p for g in opt.param_groups for p in g["params"]]
        device = self.params[0].device.type
        scaler = torch.amp.GradScaler if torch_classes else fusedopt.GradScaler
        self.scaler = scaler(device, init_scale=1.0, growth_interval=1 << 30)
        self.clip = torch.nn.utils.clip_grad_norm_ if torch_classes else fusedopt.clip_grad_norm_
        self.scaler.scale(torch.ones((), device=device))  # the scale is made

    def step(self) -> None:
        if self.idiom:
            self.scaler.unscale_(self.opt)
            self.clip(self.params, 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()


IMPLS = {
    "torch fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
    "torch foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
    "fusedopt": lambda ps: fusedopt.AdamW(ps, lr=1e-3),
    "fusedopt, max_grad_norm": lambda ps: fusedopt.AdamW(ps, lr=1e-3, max_grad_norm=1.0),
    "fusedopt SGD(momentum)": lambda ps: fusedopt.SGD(ps, lr=1e-3, momentum=0.9),
}
# The whole AMP step (--amp): torch's idiom with torch's fused AdamW, fusedopt's
# fused loop, and torch's idiom with fusedopt's classes.
AMP_IMPLS = {
    "AMP: torch idiom, fused": lambda ps: AmpStep(torch.optim.AdamW(ps, lr=1e-3, fused=True), True, True),
    "AMP: fusedopt fused loop": lambda ps: AmpStep(fusedopt.AdamW(ps, lr=1e-3, max_grad_norm=1.0), False),
    "AMP: fusedopt idiom": lambda ps: AmpStep(fusedopt.AdamW(ps, lr=1e-3), True),
}
BASELINE = "torch fused"


def _stepper(make, count: int, device: torch.device):
    params = [torch.nn.Parameter(torch.randn(1, device=device)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(1, device=device)
    opt = make(params)
    for _ in range(5):  # states made, plans built
        opt.step()
    return opt


def _seconds_per_step(opt, reps: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        opt.step()
    sync()
    return (time.perf_counter() - t) / reps


def measure(small: int, large: int, rounds: int, device: torch.device, budget: int = 40_000,
            impls: dict | None = None) -> dict:
    """``budget``: tensor-steps per timing (repetitions = budget / tensors);
    ``impls``: the implementations (IMPLS by default; the baseline is added)."""
    impls = dict(IMPLS if impls is None else impls)
    impls.setdefault(BASELINE, IMPLS[BASELINE])
    steppers = {name: (_stepper(make, small, device), _stepper(make, large, device)) for name, make in impls.items()}
    reps_small, reps_large = max(3, budget // small), max(3, budget // large)
    per_round: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, (few, many) in steppers.items():
            t_few = min(_seconds_per_step(few, reps_small, device) for _ in range(3))
            t_many = min(_seconds_per_step(many, reps_large, device) for _ in range(3))
            per_round[name].append((t_many - t_few) / (large - small))
    base = per_round[BASELINE]
    return {
        name: {
            "us_per_tensor": median(values) * 1e6,
            "ratio_to_torch_fused": median([b / v for b, v in zip(base, values)]),
        }
        for name, values in per_round.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedopt.benchmark.host_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=20, help="tensors in the small step (default 20)")
    parser.add_argument("--large", type=int, default=2000, help="tensors in the large step (default 2000)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=int, default=40_000,
                        help="tensor-steps per timing: repetitions are this over the tensor count (default 40000)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--amp", action="store_true",
                        help="also the whole AMP step: torch's idiom (torch's classes, fused AdamW), fusedopt's fused "
                             "loop, torch's idiom with fusedopt's classes")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and below --large")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"no CUDA device here for --device {args.device}")
    torch.set_num_threads(1)
    impls = {**IMPLS, **AMP_IMPLS} if args.amp else IMPLS
    results = measure(args.small, args.large, args.rounds, device, args.budget, impls)
    print(f"host cost per tensor, AdamW step (slope {args.small} -> {args.large} one-element params, "
          f"1 thread, {device}, median of {args.rounds} rounds):")
    for name, r in results.items():
        print(f"  {name:28s} {r['us_per_tensor']:6.2f} us   (torch fused / this: {r['ratio_to_torch_fused']:.2f}x)")
    if args.out:
        report = {
            "what": "host cost per tensor of one optimizer step",
            "machine": cpu_description() if device.type == "cpu" else torch.cuda.get_device_name(device),
            "torch": torch.__version__,
            "fusedopt": fusedopt.__version__,
            "backend": fusedopt.backend_info(),
            "small": args.small, "large": args.large, "rounds": args.rounds, "device": str(device),
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
