"""bf16/fp16 params and states: math in fp32, rounded once per step.

Checked against torch's fused CPU optimizers (the same fp32-math contract), and
against fusedopt.reference, whose fp32 results are torch's own."""

import pytest
import torch

import fusedopt
from fusedopt import _reference_sgd, reference
from helpers import clone_params, make_grads, make_params, run_side_by_side, set_grads

SHAPES = [(1,), (7,), (33,), (1000,), (4099,)]
ULP = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


def _tol(dtype, ulps=2):
    return dict(rtol=ulps * ULP[dtype], atol=ulps * ULP[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls,torch_cls", [(fusedopt.AdamW, torch.optim.AdamW), (fusedopt.Adam, torch.optim.Adam)])
def test_adam_matches_torch_fused(dtype, cls, torch_cls):
    # large lr and decay so that a dropped decay (2.5%/step) shows above bf16 rounding
    kwargs = dict(lr=0.05, weight_decay=0.5, amsgrad=True)
    pa, pb, oa, ob = run_side_by_side(cls, torch_cls, SHAPES, kwargs, dtype=dtype, steps=3, torch_extra={"fused": True})
    for a, b in zip(pa, pb):
        assert a.dtype == dtype
        torch.testing.assert_close(a.detach().float(), b.detach().float(), **_tol(dtype))
    for a, b in zip(pa, pb):
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert oa.state[a][key].dtype == dtype
            torch.testing.assert_close(oa.state[a][key].float(), ob.state[b][key].float(), **_tol(dtype, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sgd_matches_reference_and_tracks_fp64(dtype):
    # Not compared with torch's fused CPU SGD: in torch 2.13 it is wrong for
    # bf16/fp16 tensors of 32+ elements (0.2-0.7 off after three lr=0.05 steps,
    # against 0.01 for torch's own single-tensor SGD; see the fp64 check here).
    base = make_params(SHAPES, dtype=dtype)
    grads = [make_grads(base, s) for s in range(3)]
    ps = clone_params(base)
    opt = fusedopt.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.5)
    rp = [p.detach().clone() for p in base]
    bufs = [torch.zeros_like(p) for p in rp]
    first = [torch.tensor(True) for _ in rp]
    for g in grads:
        set_grads(ps, g)
        opt.step()
        _reference_sgd.sgd_(rp, g, bufs, first, [], 0.05, None, 0.9, 0.0, 0.5, False, False, None, None, None, 0.0)
    for a, b in zip(ps, rp):
        torch.testing.assert_close(a.detach().float(), b.float(), **_tol(dtype, 1))
    # fp64 run of the same steps (rounding the param to `dtype` after each, as storage does)
    for i, p0 in enumerate(base):
        p, buf = p0.detach().double(), None
        for g in grads:
            d = g[i].double() + 0.5 * p
            buf = d if buf is None else 0.9 * buf + d
            p = (p - 0.05 * buf).to(dtype).double()
        torch.testing.assert_close(ps[i].detach().double(), p, **_tol(dtype, 4))


def _reference_adamw(params, grads_per_step, lr, wd, master_weights=False, state_dtype=None):
    """Drives fusedopt.reference.adam_ directly: the oracle for the options
    torch has no equivalent of."""
    ps = [p.detach().clone() for p in params]
    sd = state_dtype or (torch.float32 if master_weights else ps[0].dtype)
    m = [torch.zeros_like(p, dtype=sd) for p in ps]
    v = [torch.zeros_like(p, dtype=sd) for p in ps]
    steps = [torch.zeros(()) for _ in ps]
    masters = [p.float() for p in ps] if master_weights else []
    for grads in grads_per_step:
        reference.adam_(ps, grads, m, v, [], steps, masters, lr, None, 0.9, 0.999, 1e-8, wd, True, False, False,
                        None, None, None, 0.0)
    return ps, m, v, masters


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grad_dtype", ["same", torch.float32])
def test_adamw_matches_reference(dtype, grad_dtype):
    base = make_params(SHAPES, dtype=dtype)
    gd = dtype if grad_dtype == "same" else grad_dtype
    grads = [make_grads(base, s, grad_dtype=gd) for s in range(4)]
    ps = clone_params(base)
    opt = fusedopt.AdamW(ps, lr=0.01, weight_decay=0.1)
    for g in grads:
        set_grads(ps, g)
        opt.step()
    rp, rm, rv, _ = _reference_adamw(base, grads, 0.01, 0.1)
    for a, b in zip(ps, rp):
        torch.testing.assert_close(a.detach().float(), b.float(), **_tol(dtype, 1))
    for a, m in zip(ps, rm):
        torch.testing.assert_close(opt.state[a]["exp_avg"].float(), m.float(), **_tol(dtype, 1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_master_weights_follow_an_fp32_run(dtype):
    """With fp32 masters, the master copy evolves exactly like fp32 AdamW started
    from the low-precision values; the param is its rounding."""
    base = make_params(SHAPES, dtype=dtype)
    grads = [make_grads(base, s) for s in range(5)]
    ps = clone_params(base)
    opt = fusedopt.AdamW(ps, lr=0.01, weight_decay=0.1, master_weights=True)
    ref = [torch.nn.Parameter(p.detach().float()) for p in base]
    ropt = torch.optim.AdamW(ref, lr=0.01, weight_decay=0.1, foreach=False)
    for g in grads:
        set_grads(ps, g)
        set_grads(ref, [x.float() for x in g])
        opt.step()
        ropt.step()
    for p, r in zip(ps, ref):
        master = opt.state[p]["master_param"]
        assert master.dtype == torch.float32 and opt.state[p]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(master, r.detach(), rtol=2e-6, atol=2e-6)
        assert torch.equal(p.detach(), master.to(dtype))


def test_master_weights_with_sgd():
    base = make_params(SHAPES, dtype=torch.bfloat16)
    ps = clone_params(base)
    ref = [torch.nn.Parameter(p.detach().float()) for p in base]
    opt = fusedopt.SGD(ps, lr=0.05, momentum=0.9, master_weights=True)
    ropt = torch.optim.SGD(ref, lr=0.05, momentum=0.9, foreach=False)
    for s in range(4):
        g = make_grads(base, s)
        set_grads(ps, g)
        set_grads(ref, [x.float() for x in g])
        opt.step()
        ropt.step()
    for p, r in zip(ps, ref):
        torch.testing.assert_close(opt.state[p]["master_param"], r.detach(), rtol=2e-6, atol=2e-6)


def test_bf16_moments_for_fp32_params():
    base = make_params(SHAPES)
    grads = [make_grads(base, s) for s in range(4)]
    ps = clone_params(base)
    opt = fusedopt.AdamW(ps, lr=0.01, weight_decay=0.1, state_dtype=torch.bfloat16)
    for g in grads:
        set_grads(ps, g)
        opt.step()
    rp, rm, rv, _ = _reference_adamw(base, grads, 0.01, 0.1, state_dtype=torch.bfloat16)
    for a, b, m in zip(ps, rp, rm):
        assert opt.state[a]["exp_avg"].dtype == torch.bfloat16
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(opt.state[a]["exp_avg"].float(), m.float(), **_tol(torch.bfloat16, 1))
    # and the moments really are stored in bf16: the run differs from an fp32-state one
    pf, _, _, _ = run_side_by_side(fusedopt.AdamW, torch.optim.AdamW, SHAPES, dict(lr=0.01, weight_decay=0.1), steps=4)
    assert any(not torch.equal(a.detach(), b.detach()) for a, b in zip(ps, pf))
