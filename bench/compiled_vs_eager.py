"""The compiled AdamW step against the eager one, interleaved, on one thread.

    .venv/bin/python bench/compiled_vs_eager.py [--reps 15] [--backend inductor]

For each workload, an eager fusedopt.AdamW and a torch.compile(opt.step,
fullgraph=True) one over equal params take turns: each rep times a burst of
steps of one, then of the other, so that a busy machine slows both alike.
Prints per-step medians, the spread (min-max of the reps) and the
compiled/eager ratio of each rep's pair (its median and range).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fusedopt

WORKLOADS = {"10x1M": (10, 1_000_000), "1000x10K": (1000, 10_000), "100x1K": (100, 1_000)}


def _opt(n, size, seed):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(size, generator=gen)) for _ in range(n)]
    for p in params:
        p.grad = torch.randn(size, generator=gen) * 1e-3
    return fusedopt.AdamW(params, lr=1e-3, weight_decay=0.1)


def _burst(step, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 64
    print(f"torch {torch.__version__}, backend {args.backend}, one thread, {args.reps} interleaved reps")
    for name in args.workloads.split(","):
        n, size = WORKLOADS[name]
        eager, compiled = _opt(n, size, 0), _opt(n, size, 0)
        cstep = torch.compile(compiled.step, fullgraph=True, backend=args.backend)
        t0 = time.perf_counter()
        cstep()
        first = time.perf_counter() - t0
        eager.step()
        calls = max(3, int(0.05 / max(_burst(eager.step, 3), 1e-6)))  # ~50 ms a burst
        _burst(cstep, calls)
        e, c = [], []
        for _ in range(args.reps):
            e.append(_burst(eager.step, calls))
            c.append(_burst(cstep, calls))
        ratios = [b / a for a, b in zip(e, c)]
        ms = lambda xs: f"{statistics.median(xs) * 1e3:8.3f} ms [{min(xs) * 1e3:.3f}-{max(xs) * 1e3:.3f}]"  # noqa: E731
        print(f"{name:>9}: eager {ms(e)}  compiled {ms(c)}  compiled/eager {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}]  ({calls} steps a burst; first compiled call {first:.1f} s)")


if __name__ == "__main__":
    main()
