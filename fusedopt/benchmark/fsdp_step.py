"""The optimizer step of an FSDP2 model, fusedopt against torch, on the same
DTensor params and grads: AdamW alone, and clip-by-global-norm + AdamW (torch:
torch.nn.utils.clip_grad_norm_ then the step; fusedopt: max_grad_norm, one
all-reduce inside the step).

    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 -m fusedopt.benchmark.fsdp_step [--workload NAME] [--out FILE]
        [--compiled]

--compiled adds fusedopt's step under torch.compile(fullgraph=True) (inductor;
its compilation happens in the warm-up steps, outside the timings).

On CPUs the ranks use gloo; where every rank has a GPU, nccl and cuda:LOCAL_RANK
(the same script). Each figure is the slowest rank's time for `reps` steps in a
row (the clipped steps synchronize the ranks anyway); implementations alternate
within each round, and a speedup is the median of per-round ratios to torch's
fused AdamW (the same baseline with and without clipping), so a machine whose
speed drifts between rounds affects both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn

import fusedopt
from fusedopt import _ops

from .environment import cpu_description
from .summary import median

# decoder-shaped models: (layers, width); FFN 4x width, no attention math
# (the step only sees the params and their grads)
WORKLOADS = {
    "decoder-d128-l24": (24, 128),  # 290 small tensors: per-tensor overhead
    "decoder-d512-l12": (12, 512),  # 40M params: memory bandwidth
    "decoder-d768-l12": (12, 768),  # GPT-2-small-sized blocks, for GPUs
}
LR, WD, MAX_NORM = 1e-4, 0.01, 1.0


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        d = x.shape[-1]
        x = x + self.proj(self.qkv(self.ln1(x))[..., :d])
        return x + self.down(torch.relu(self.up(self.ln2(x))))


def build(layers: int, d: int, device: torch.device) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(*[Block(d) for _ in range(layers)], nn.LayerNorm(d)).to(device)
    for block in model[:-1]:
        fully_shard(block)
    fully_shard(model)
    model(torch.randn(8, d, device=device)).square().mean().backward()  # grads, as DTensors
    return model


def implementations(params: list, clip: bool, compiled: bool = False) -> dict:
    def torch_step(**flags):
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, **flags)
        if not clip:
            return opt.step

        def step():
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
            opt.step()

        return step

    def fused_step():
        return fusedopt.AdamW(params, lr=LR, weight_decay=WD, max_grad_norm=MAX_NORM if clip else None).step

    out = {
        "torch-fused": torch_step(fused=True),
        "torch-foreach": torch_step(foreach=True),
        "fusedopt": fused_step(),
    }
    if compiled:
        out["fusedopt-compiled"] = torch.compile(fused_step(), fullgraph=True)
    return out


def seconds(step, reps: int, device: torch.device) -> float:
    """The slowest rank's time for `reps` steps."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dist.barrier()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    sync()
    t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t) / reps


def run(workload: str, rounds: int, reps: int, device: torch.device, compiled: bool = False) -> dict:
    model = build(*WORKLOADS[workload], device)
    params = list(model.parameters())
    out = {}
    for clip in (False, True):
        impls = implementations(params, clip, compiled)
        for step in impls.values():  # states are made on the first step
            for _ in range(2):
                step()
        per_round = {name: [] for name in impls}
        for _ in range(rounds):
            for name, step in impls.items():
                per_round[name].append(seconds(step, reps, device))
        base = per_round["torch-fused"]
        out["clip + step" if clip else "step"] = {
            name: {"median_ms": 1e3 * median(ts), "speedup_vs_torch_fused": median(b / t for b, t in zip(base, ts))}
            for name, ts in per_round.items()
        }
        del impls
    local = sum(p._local_tensor.numel() for p in params)
    return {"workload": workload, "tensors": len(params), "params": sum(p.numel() for p in params),
            "params_per_rank": local, "results": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    ap.add_argument("--compiled", action="store_true", help="also fusedopt's step under torch.compile")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    default = ["decoder-d768-l12"] if cuda else ["decoder-d128-l24", "decoder-d512-l12"]
    report = {
        "machine": torch.cuda.get_device_name(device) if cuda else cpu_description(),
        "device": device.type,
        "backend": _ops.backend(device),
        "cpu_isa": _ops.cpu_isa(),
        "ranks": dist.get_world_size(),
        "threads_per_rank": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "reps_per_round": args.reps,
        "runs": [run(w, args.rounds, args.reps, device, args.compiled) for w in args.workload or default],
    }
    if dist.get_rank() == 0:
        print_table(report)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    dist.destroy_process_group()


def print_table(report: dict) -> None:
    print(f"FSDP2 optimizer step, {report['ranks']} ranks on {report['machine']} ({report['backend']}), "
          f"torch {report['torch']}; median ms per step (speedup vs torch fused AdamW)")
    for run_ in report["runs"]:
        print(f"\n{run_['workload']}: {run_['tensors']} tensors, {run_['params'] / 1e6:.1f}M params "
              f"({run_['params_per_rank'] / 1e6:.1f}M on rank 0)")
        names = list(next(iter(run_["results"].values())))
        print(f"{'':14}" + "".join(f"{n:>24}" for n in names))
        for what, row in run_["results"].items():
            cells = "".join(f"{row[n]['median_ms']:>14.2f} ({row[n]['speedup_vs_torch_fused']:.2f}x)" for n in names)
            print(f"{what:14}{cells}")


if __name__ == "__main__":
    main()
