"""The compiled AdamW step against the eager one, interleaved, on one thread.

    .venv/bin/python bench/compiled_vs_eager.py [--reps 15] [--backend inductor]
    python bench/compiled_vs_eager.py --device cuda --modes default,reduce-overhead

For each workload and torch.compile mode, an eager fusedopt.AdamW and a
torch.compile(opt.step, fullgraph=True) one over equal params take turns: each
rep times a burst of steps of one, then of the other, so that a busy machine
slows both alike (on a GPU a burst ends with a synchronize: the time is what a
training loop waits for, host and device together). Prints per-step medians,
the spread (min-max of the reps) and the compiled/eager ratio of each rep's
pair (its median and range). mode "reduce-overhead" replays the step as a CUDA
graph, which skips the per-call cost the compiled step pays on the host for
every tensor it names (bench/compiled_route_probe.py); on a CPU it is the
default mode.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch._dynamo.utils import counters

import fusedopt

WORKLOADS = {"10x1M": (10, 1_000_000), "1000x10K": (1000, 10_000), "100x1K": (100, 1_000)}


def _opt(n, size, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(size, generator=gen).to(device)) for _ in range(n)]
    for p in params:
        p.grad = (torch.randn(size, generator=gen) * 1e-3).to(device)
    return fusedopt.AdamW(params, lr=1e-3, weight_decay=0.1)


def _burst(step, calls, sync=None):
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    if sync:
        sync()
    return (time.perf_counter() - t0) / calls


def _compare(name, n, size, device, mode, backend, reps, sync):
    eager, compiled = _opt(n, size, 0, device), _opt(n, size, 0, device)
    cstep = torch.compile(compiled.step, fullgraph=True, backend=backend, mode=None if mode == "default" else mode)
    t0 = time.perf_counter()
    cstep()
    if sync:
        sync()
    first = time.perf_counter() - t0
    eager.step()
    calls = max(3, int(0.05 / max(_burst(eager.step, 3, sync), 1e-6)))  # ~50 ms a burst
    _burst(cstep, calls, sync)  # warm: CUDA graphs record after a few calls
    e, c = [], []
    for _ in range(reps):
        e.append(_burst(eager.step, calls, sync))
        c.append(_burst(cstep, calls, sync))
    ratios = [b / a for a, b in zip(e, c)]
    ms = lambda xs: f"{statistics.median(xs) * 1e3:8.3f} ms [{min(xs) * 1e3:.3f}-{max(xs) * 1e3:.3f}]"  # noqa: E731
    print(f"{name:>9} {mode:>15}: eager {ms(e)}  compiled {ms(c)}  compiled/eager {statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}]  ({calls} steps a burst; first compiled call {first:.1f} s)",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default="default", help="torch.compile modes, e.g. default,reduce-overhead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 64
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    print(f"torch {torch.__version__}, device {device}, backend {args.backend}, one thread, "
          f"{args.reps} interleaved reps")
    failed = False
    for name in args.workloads.split(","):
        n, size = WORKLOADS[name]
        for mode in args.modes.split(","):
            torch._dynamo.reset()
            counters.clear()
            try:
                _compare(name, n, size, device, mode, args.backend, args.reps, sync)
                # inductor falls back to no CUDA graphs quietly (an input it cannot
                # keep static, a CPU tensor): a reduce-overhead row must say so
                skips = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
                if mode == "reduce-overhead" and device.type == "cuda":
                    print(f"{'':>9} {'':>15}  CUDA graph skips: {skips or 'none'}", flush=True)
            except Exception as exc:  # one mode's failure is a finding; the other rows still run
                failed = True
                print(f"{name:>9} {mode:>15}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
