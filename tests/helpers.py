"""Shared machinery: run fusedopt and torch.optim side by side on identical
params and grads, and compare."""

from __future__ import annotations

import copy

import torch

import fusedopt


def make_params(shapes, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype=dtype, device=device))
        for shape in shapes
    ]


def make_grads(params, step, seed=0, none_every=None, scale=1.0, grad_dtype=None):
    """Deterministic grads for a step. With none_every=k, param i gets no grad on
    steps where (i + step) % k == 0."""
    gen = torch.Generator().manual_seed(1000 * seed + step)
    grads = []
    for i, p in enumerate(params):
        g = (torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale).to(
            dtype=grad_dtype or p.dtype, device=p.device
        )
        if none_every is not None and (i + step) % none_every == 0:
            g = None
        grads.append(g)
    return grads


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        if g is not None and g.dtype != p.dtype and hasattr(p, "grad_dtype"):
            p.grad_dtype = g.dtype  # torch >= 2.12 checks a grad's dtype on assignment
        p.grad = None if g is None else g.clone()


def split_groups(params, group_kwargs):
    """Params dealt round-robin into len(group_kwargs) groups."""
    n = len(group_kwargs)
    return [dict(params=params[i::n], **kw) for i, kw in enumerate(group_kwargs)]


def run_side_by_side(
    fused_cls,
    torch_cls,
    shapes,
    kwargs,
    steps=5,
    dtype=torch.float32,
    group_kwargs=None,
    none_every=None,
    torch_extra=None,
    fused_extra=None,
    scheduler=None,
    grad_dtype=None,
    seed=0,
):
    """Runs `steps` steps of both optimizers on copies of the same params with
    the same grads; returns (fused params, torch params, fused opt, torch opt)."""
    base = make_params(shapes, dtype=dtype, seed=seed)
    pa, pb = clone_params(base), clone_params(base)

    def build(cls, params, extra):
        kw = dict(kwargs, **(extra or {}))
        groups = split_groups(params, group_kwargs) if group_kwargs else params
        return cls(groups, **kw)

    oa = build(fused_cls, pa, fused_extra)
    ob = build(torch_cls, pb, torch_extra)
    sa = scheduler(oa) if scheduler else None
    sb = scheduler(ob) if scheduler else None
    for step in range(steps):
        grads = make_grads(base, step, seed=seed, none_every=none_every, grad_dtype=grad_dtype)
        set_grads(pa, grads)
        set_grads(pb, grads)
        oa.step()
        ob.step()
        if sa is not None:
            sa.step()
            sb.step()
    return pa, pb, oa, ob


def assert_params_close(pa, pb, **tol):
    for i, (a, b) in enumerate(zip(pa, pb)):
        torch.testing.assert_close(a.detach(), b.detach(), msg=lambda m, i=i: f"param {i}: {m}", **tol)


def assert_states_close(oa, ob, params_a, params_b, **tol):
    for i, (a, b) in enumerate(zip(params_a, params_b)):
        sa, sb = oa.state.get(a, {}), ob.state.get(b, {})
        assert set(sa) == set(sb), f"param {i}: state keys {sorted(sa)} vs torch {sorted(sb)}"
        for key in sb:
            va, vb = sa[key], sb[key]
            if key == "step":
                assert float(va) == float(vb), f"param {i}: step {float(va)} vs torch {float(vb)}"
                continue
            torch.testing.assert_close(
                va.to(vb.dtype), vb, msg=lambda m, i=i, key=key: f"param {i} {key}: {m}", **tol
            )


def fp32_tol():
    # A few ulps after several steps. On the CPU fusedopt's SGD is torch's bit for
    # bit and its Adam/AdamW differ only through torch's sqrt (test_torch_bitwise.py
    # holds those claims); the tests using this tolerance also compare with
    # torch's fused and foreach paths, the other backends and clipping, which
    # round differently. Every error they look for (a dropped or doubled weight
    # decay, a wrong bias correction, a momentum applied in the wrong order) is
    # orders of magnitude above this.
    return dict(rtol=2e-6, atol=2e-6)


def deepcopy_opt_state(opt):
    return copy.deepcopy(opt.state_dict())


__all__ = [
    "fusedopt",
    "make_params",
    "make_grads",
    "clone_params",
    "set_grads",
    "run_side_by_side",
    "assert_params_close",
    "assert_states_close",
    "fp32_tol",
]
