"""The native-plan cases both backends' plan tests run (tests/test_native_plan.py
on the CPU, tests/test_cuda_plans.py on a GPU): an optimizer driven for a few
steps with native plans on or off, everything else equal, so that the two runs
can be compared bit for bit."""

from __future__ import annotations

import torch

import fusedopt
from fusedopt import _native_plan

CONFIGS = {
    "adamw": (fusedopt.AdamW, dict(lr=0.05)),
    "adam amsgrad": (fusedopt.Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    "adamw clip": (fusedopt.AdamW, dict(lr=0.05, max_grad_norm=0.5)),
    "adamw clip value maximize": (fusedopt.AdamW, dict(lr=0.05, max_grad_value=0.3, maximize=True)),
    "adamw tensor lr": (fusedopt.AdamW, dict(lr=torch.tensor(0.05))),
    "bf16 master": (fusedopt.AdamW, dict(lr=0.05, master_weights=True)),
    "bf16 states": (fusedopt.AdamW, dict(lr=0.05, state_dtype=torch.bfloat16)),
    "bf16 stochastic rounding": (fusedopt.AdamW, dict(lr=0.05, stochastic_rounding=True, seed=3)),
    "adam amsgrad 8bit states": (fusedopt.Adam, dict(lr=0.05, amsgrad=True, state_dtype="8bit", min_8bit_size=1)),
    "sgd": (fusedopt.SGD, dict(lr=0.1)),
    "sgd nesterov clip": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, max_grad_norm=0.5)),
    "sgd dampening master": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, master_weights=True)),
}


def plan_params(config, device="cpu", shapes=((7,), (3, 5), (1,), (0,), (64,))):
    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if config.startswith("bf16") or "master" in config else torch.float32
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype).to(device)) for s in shapes]


def recorded_binds(monkeypatch) -> list[bool]:
    """A list that gets what every plan bind answers from now on: a plan's
    own, or the binds a step's first op makes for all its reused plans."""
    binds = []
    bind, run_binding = _native_plan.NativePlan.bind, _native_plan.run_binding

    def recorded(plan, grads):
        binds.append(bind(plan, grads))
        return binds[-1]

    def recorded_run(op, args, pending):
        try:
            run_binding(op, args, pending)
        except _native_plan.Refit:
            binds.append(False)
            raise
        binds.append(True)
        return True

    monkeypatch.setattr(_native_plan.NativePlan, "bind", recorded)
    monkeypatch.setattr(_native_plan, "run_binding", recorded_run)
    return binds


def run_plan_case(config, steps, plans, monkeypatch, scaler=False, channels_last=False, device="cpu"):
    """`steps` steps of `config` on `device`, through native plans or not.
    Returns the params, the optimizer and what each plan bind answered (a
    step whose grads a plan took, True, ran on the tables it kept)."""
    cls, kw = CONFIGS[config]
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    params = plan_params(config, device)
    if channels_last:
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
        params.append(torch.nn.Parameter(x.to(params[0].dtype, memory_format=torch.channels_last).to(device)))
    opt = cls(params, **kw)
    grad_scaler = fusedopt.GradScaler(torch.device(device).type, init_scale=1024.0) if scaler else None
    monkeypatch.setattr(_native_plan, "ENABLED", plans)
    binds = recorded_binds(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen).to(p.dtype)
            if p.dim() == 4:
                g = g.contiguous(memory_format=torch.channels_last)
            g = g.to(device)
            # a param without a grad on step 2: its group's plans are made anew
            # then and on step 3; the other steps bind their grads to a plan
            p.grad = None if (step == 2 and i == 1) else (g * 1024.0 if scaler else g)
        if scaler:
            grad_scaler.scale(torch.ones((), device=device))  # as scaler.scale(loss) starts the scale
            if step == 2:
                params[4].grad[3] = float("inf")  # this step is skipped
            grad_scaler.step(opt)
            grad_scaler.update()
        else:
            opt.step()
    return params, opt, binds


def planned_buckets(opt):
    """The buckets of `opt`'s cached buckets that have a native plan."""
    return [b for plan in opt._bucket_cache.caches for b in plan.buckets.values() if b.native_plan is not None]


def assert_same_run(a, b):
    """Two run_plan_case results are equal bit for bit: params and every state."""
    (pa, oa, _), (pb, ob, _) = a, b
    for p, q in zip(pa, pb):
        assert torch.equal(p.detach(), q.detach())
    for (_, sa), (_, sb) in zip(oa.state_dict()["state"].items(), ob.state_dict()["state"].items()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
