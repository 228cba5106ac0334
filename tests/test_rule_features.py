"""Adagrad and Lion, which joined through the optimizer descriptor
(fusedopt/optim/_rule.py, csrc/rules/), get every fusedopt feature Adam has:
the native kernels agree with the plain-torch fallback on every path of the
list op (AMP scale, clip by norm and by value, maximize, master weights,
low-precision states, the found_inf skip), the fused clip equals torch's clip
idiom, GradScaler drives them, master weights follow fp32 math, plans change
no bit. (torch.compile: tests/test_compile.py; DTensor/FSDP2:
tests/dist_fsdp.py; CUDA kernels under the emulation:
tests/test_cuda_emulated_rules.py.)"""

from __future__ import annotations

import copy

import pytest
import torch

import fusedopt
from conftest import requires_native_cpu
from fusedopt import _native_plan
from helpers import clone_params, make_grads, make_params, set_grads

SHAPES = [(7, 5), (33,), (), (1000,), (3, 4, 5)]

OPTIMIZERS = {
    "Adagrad": (fusedopt.Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    "Lion": (fusedopt.Lion, dict(lr=1e-3, weight_decay=0.1)),
}
# the hyperparameters each rule's list op takes (its Rule.hyper), for the op-level cases
HYPER = {"Adagrad": [0.01, 0.1, 1e-10], "Lion": [0.9, 0.99, 0.1]}


def _run(cls, params, kwargs, steps=4, grad_dtype=None, scaler=None, clip=None):
    opt = cls(params, **copy.deepcopy(kwargs))
    for step in range(steps):
        set_grads(params, make_grads(params, step, grad_dtype=grad_dtype))
        if clip is not None:
            clip(params)
        opt.step()
    return opt


def _op_lists(name, dtype, state_dtype, master, seed=0):
    gen = torch.Generator().manual_seed(seed)
    fp32 = [torch.randn(n, generator=gen) for n in (3, 17, 1000)]
    params = [p.to(dtype) for p in fp32]
    grads = [torch.randn(n, generator=gen).to(dtype) for n in (3, 17, 1000)]
    states = [torch.rand(n, generator=gen).to(state_dtype) for n in (3, 17, 1000)]
    counters = [torch.full((), 2.0) for _ in params] if name == "Adagrad" else []
    masters = fp32 if master else []
    return [params, grads, states, counters, masters]


@requires_native_cpu
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    "dtype,state_dtype,master", [(torch.float32, torch.float32, False), (torch.bfloat16, torch.bfloat16, True),
                                 (torch.float16, torch.float32, False)]
)
@pytest.mark.parametrize("amp", ["none", "scale+clip", "skip", "value+maximize"])
def test_the_native_op_agrees_with_the_fallback(name, dtype, state_dtype, master, amp):
    rule = OPTIMIZERS[name][0].rule
    native = _op_lists(name, dtype, state_dtype, master)
    ref = [[t.clone() for t in lst] for lst in native]
    before = [[t.clone() for t in lst] for lst in native]
    grad_scale = found_inf = sumsq = None
    max_norm, max_value, maximize = 0.0, 0.0, False
    if amp == "scale+clip":
        grad_scale, found_inf, sumsq, max_norm = torch.full((1,), 8.0), torch.zeros(1), torch.full((1,), 50.0), 1.0
    elif amp == "skip":
        found_inf = torch.ones(1)
    elif amp == "value+maximize":
        max_value, maximize = 0.5, True
    tail = (HYPER[name], None, 0.01, None, grad_scale, found_inf, sumsq, max_norm, max_value, maximize)
    getattr(torch.ops.fusedopt, rule.name + "_")(*native, *tail)
    rule.reference(*ref, *tail)
    for lst, rlst, blst in zip(native, ref, before):
        for a, b, c in zip(lst, rlst, blst):
            if amp == "skip":
                assert torch.equal(a, c) and torch.equal(b, c)  # nothing written, no counter advanced
            else:
                # Lion: the same ops, the same bits; Adagrad: torch's sqrt (the
                # fallback's) is not correctly rounded, the kernels' is
                tol = dict(rtol=0, atol=0) if name == "Lion" else dict(rtol=4e-6, atol=1e-7)
                if a.dtype in (torch.bfloat16, torch.float16) and name != "Lion":
                    tol = dict(rtol=1e-2, atol=1e-3)
                torch.testing.assert_close(a, b, **tol)
    if amp != "skip":
        assert not torch.equal(native[0][2], before[0][2])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_max_grad_norm_and_value_are_torchs_clip_idiom(name):
    cls, kw = OPTIMIZERS[name]
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    norms = []

    def torch_idiom(ps):
        torch.nn.utils.clip_grad_value_(ps, 0.8)
        norms.append(torch.nn.utils.clip_grad_norm_(ps, 2.0))

    oa = cls(pa, **kw, max_grad_norm=2.0, max_grad_value=0.8)
    for step in range(4):
        set_grads(pa, make_grads(pa, step))
        oa.step()
        if step == 3:
            last = oa.last_grad_norm
    _run(cls, pb, kw, clip=torch_idiom)
    torch.testing.assert_close(last, norms[-1], rtol=1e-6, atol=0)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_grad_scaler_steps_and_skips(name):
    cls, kw = OPTIMIZERS[name]
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    oa, ob = cls(pa, **kw), cls(pb, **kw)
    scaler = fusedopt.GradScaler("cpu", init_scale=1024.0)
    for step in range(3):
        grads = make_grads(pa, step)
        scaler.scale(torch.zeros(()))  # what scaling a loss does first: the scale is made
        set_grads(pa, [g * scaler.get_scale() for g in grads])  # a power of two: exact
        if step == 1:
            pa[1].grad[0] = float("inf")  # this step is skipped, nothing changes
            before = [p.detach().clone() for p in pa], copy.deepcopy(oa.state_dict())
        scaler.step(oa)
        scaler.update()
        if step == 1:
            assert all(torch.equal(p.detach(), b) for p, b in zip(pa, before[0]))
            after = oa.state_dict()["state"]
            for k, st in before[1]["state"].items():
                assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(after[k][key])) for key, v in st.items())
            continue
        set_grads(pb, grads)
        ob.step()
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


@requires_native_cpu
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_master_weights_follow_fp32_math_and_states_take_state_dtype(name):
    cls, kw = OPTIMIZERS[name]
    low = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in make_params(SHAPES)]
    fp32 = [torch.nn.Parameter(p.detach().float()) for p in low]  # where the masters start
    oa = cls(low, **kw, master_weights=True)
    of = cls(fp32, **kw)
    for step in range(4):
        grads = make_grads(fp32, step)  # float32 grads for the bf16 params too
        set_grads(fp32, grads)
        set_grads(low, grads)
        oa.step()
        of.step()
    # the master is updated by the fp32 math, bit for bit; the param is its rounding
    for p, f in zip(low, fp32):
        master = oa.state[p]["master_param"]
        assert master.dtype == torch.float32
        assert torch.equal(master, f.detach())
        assert torch.equal(p.detach(), master.to(torch.bfloat16))
    sb = cls(clone_params(fp32), **kw, state_dtype=torch.bfloat16)
    set_grads(sb.param_groups[0]["params"], make_grads(fp32, 9))
    sb.step()
    name0 = cls.rule.states[0]
    assert all(st[name0].dtype == torch.bfloat16 for st in sb.state.values())


@requires_native_cpu
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_native_plans_change_no_bit_and_report_their_backend(name, monkeypatch):
    cls, kw = OPTIMIZERS[name]
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    oa = _run(cls, pa, kw)
    assert oa.step_backends() == {"cpu-native": len(SHAPES)}
    assert all(b.native_plan is not None for c in oa._bucket_cache.caches for b in c.buckets.values())
    monkeypatch.setattr(_native_plan, "ENABLED", False)
    ob = _run(cls, pb, kw)
    assert all(b.native_plan is None for c in ob._bucket_cache.caches for b in c.buckets.values())
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float64_params_take_the_fallback_and_agree(name):
    cls, kw = OPTIMIZERS[name]
    pa = make_params(SHAPES)
    pb = [torch.nn.Parameter(p.detach().double()) for p in pa]
    _run(cls, pa, kw)
    ob = _run(cls, pb, kw)
    assert ob.step_backends() == {"reference": len(SHAPES)}
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a.detach().double(), b.detach(), rtol=1e-5, atol=1e-6)
