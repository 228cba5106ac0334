"""Run under FUSEDOPT_CPU_ISA=<isa>: a fixed workload through every CPU kernel,
saved to argv[1]. test_isa.py compares the files bitwise across instruction sets."""

import sys

import torch

import fusedopt
import fusedopt._ops as ops

SIZES = (1, 15, 16, 17, 100, 4099, 70003)  # tails of every length class, several threads


def params(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=g).to(dtype)) for n in SIZES]


def grads(ps, step, dtype=None):
    g = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(p.shape, generator=g) * 3).to(dtype or p.dtype) for p in ps]


def main(out):
    results = {"isa": ops.cpu_isa()}
    configs = [
        ("adamw", fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True), {}),
        ("adam-l2-max", fusedopt.Adam, dict(lr=0.01, weight_decay=0.1, maximize=True, betas=(0.3, 0.9)), {}),
        ("adamw-clip", fusedopt.AdamW, dict(lr=0.01, max_grad_norm=0.5), {}),
        ("adamw-master", fusedopt.AdamW, dict(lr=0.01, master_weights=True), {"low": True}),
        ("adamw-bf16-state", fusedopt.AdamW, dict(lr=0.01, state_dtype=torch.bfloat16), {}),
        ("sgd", fusedopt.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.1), {}),
        ("sgd-nesterov-clip", fusedopt.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, max_grad_norm=1.0), {}),
    ]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name, cls, kw, opts in configs:
            if opts.get("low") and dtype == torch.float32:
                continue
            ps = params(dtype, seed=len(name))
            opt = cls(ps, **kw)
            for step in range(3):
                for p, g in zip(ps, grads(ps, step)):
                    p.grad = g
                opt.step()
            key = f"{name}-{dtype}"
            results[key] = [p.detach().clone() for p in ps]
            results[key + "-state"] = [{k: v.clone() for k, v in opt.state[p].items()} for p in ps]
            if opt.last_grad_norm is not None:
                results[key + "-norm"] = opt.last_grad_norm.clone()
    # GradScaler's unscale and the stats pass over mixed dtypes
    torch.manual_seed(7)
    mixed = [torch.randn(n).to(dt) * 1000 for n, dt in zip(SIZES, [torch.float32, torch.bfloat16, torch.float16] * 3)]
    found, sumsq = torch.zeros(1), torch.zeros(1)
    torch.ops.fusedopt.grad_stats_(mixed, torch.tensor(1024.0), found, sumsq)
    torch.ops.fusedopt.unscale_(mixed, found, torch.tensor(1 / 1024.0))
    results["stats"] = (found.clone(), sumsq.clone(), [m.clone() for m in mixed])
    torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
