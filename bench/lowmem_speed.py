"""Speed of the 8-bit AdamW step on the CPU (issue 22): fusedopt's
state_dtype="8bit" against torch's fp32 AdamW (fused and foreach), fusedopt's
fp32 AdamW, and the 8-bit AdamWs of bitsandbytes and torchao where they import
(torchao's step compiled, as torchao recommends).

Each optimizer owns its own copy of the same params and grads; the steps are
timed in rounds, one step of each optimizer per round in turn, so a machine's
slow moments fall on all of them alike. The report is the median step time
per optimizer and its ratio to torch's fused AdamW measured in the same run,
and the memory of one more (untimed) step: the bytes per param resident
(params, grads, states) and at the step's peak (bench/step_memory.py).

    python -m bench.lowmem_speed --numel 16000000 --rounds 30
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

import fusedopt

from . import step_memory


def shapes(numel: int) -> list[tuple[int, ...]]:
    """Transformer-like: square matrices, 4x wide ones and a few small vectors."""
    d = 1024
    out: list[tuple[int, ...]] = []
    while sum(map(_numel, out)) < numel:
        out += [(d, d), (4 * d, d), (d,), (d,)]
    return out


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def optimizers() -> dict[str, Callable]:
    kw = dict(lr=1e-3, weight_decay=0.1)
    rows = {
        "torch AdamW fp32 fused": lambda ps: torch.optim.AdamW(ps, fused=True, **kw),
        "torch AdamW fp32 foreach": lambda ps: torch.optim.AdamW(ps, foreach=True, **kw),
        "fusedopt AdamW fp32": lambda ps: fusedopt.AdamW(ps, **kw),
        "fusedopt AdamW 8bit": lambda ps: fusedopt.AdamW(ps, state_dtype="8bit", **kw),
    }
    try:
        import bitsandbytes as bnb

        rows["bitsandbytes AdamW8bit"] = lambda ps: bnb.optim.AdamW8bit(ps, **kw)
    except Exception:  # noqa: BLE001 - absent or broken: the row is left out
        pass
    try:
        from torchao.optim import AdamW8bit

        rows["torchao AdamW8bit"] = lambda ps: AdamW8bit(ps, block_size=256, **kw)
    except Exception:  # noqa: BLE001
        pass
    return rows


def run(numel: int, rounds: int, warmup: int = 3) -> list[dict]:
    torch.manual_seed(0)
    base = [torch.randn(s) for s in shapes(numel)]
    grads = [torch.randn(s) * 1e-2 for s in shapes(numel)]
    opts = {}
    for name, make in optimizers().items():
        params = [torch.nn.Parameter(b.clone()) for b in base]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opts[name] = make(params)
    times: dict[str, list[float]] = {name: [] for name in opts}
    for r in range(warmup + rounds):
        for name, opt in opts.items():
            start = time.perf_counter()
            opt.step()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    n = sum(b.numel() for b in base)
    ref = statistics.median(times["torch AdamW fp32 fused"])
    rows = []
    for name, ts in times.items():
        # one more step under the profiler, untimed: params, grads and states
        # resident, and the temporaries the step allocates on top
        opt = opts[name]
        params = [p for group in opt.param_groups for p in group["params"]]
        memory = step_memory.measure(params, opt, lambda: step_memory.optimizer_step(opt))
        rows.append({"name": name, "median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
                     "vs_torch_fused": statistics.median(ts) / ref, "params": n,
                     "resident_bytes_per_param": memory["resident_bytes"] / n,
                     "step_peak_bytes_per_param": memory["step_peak_bytes"] / n})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numel", type=int, default=16_000_000, help="parameters in all (default 16M)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, help="also write the rows as JSON, with the torch version and threads")
    args = ap.parse_args(argv)
    rows = run(args.numel, args.rounds)
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                        "machine": platform.processor() or platform.machine(),
                                        "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    print(f"{rows[0]['params']:,} params, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'optimizer':28s} {'median ms':>10s} {'min ms':>8s} {'time / torch fused':>19s} "
          f"{'resident B/param':>17s} {'step peak B/param':>18s}")
    for r in rows:
        print(f"{r['name']:28s} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {r['vs_torch_fused']:19.2f} "
              f"{r['resident_bytes_per_param']:17.2f} {r['step_peak_bytes_per_param']:18.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
