"""8-bit optimizer states (state_dtype="8bit"): the native CPU kernels against
the plain-torch reference, bit for bit, through the list ops and through the
optimizers; and what the optimizers keep and refuse.

Quality against torch and checkpoints: test_state_8bit_training.py."""

from __future__ import annotations

import pytest
import torch

import fusedopt
from fusedopt import _ops, _native_plan, _reference_quant8
from fusedopt._quant8 import dequantize_blockwise, num_blocks, quantize_blockwise

from conftest import requires_native_cpu
from helpers import fp32_tol

# Rules whose fp32 native and reference steps agree bit for bit; Adam's and
# Adagrad's differ by an ulp where torch's sqrt does (tests/helpers.fp32_tol).
# Their states do not pass through the sqrt: after one step those agree bit for
# bit, and the params within fp32_tol (later steps would feed the param's ulp
# back into the states, where it may move a code).
EXACT = {"sgd", "sgd_nesterov", "lion"}

# sizes around the 256-element blocks and the 64-element share alignment
SIZES = [1, 255, 256, 257, 1000, 4096 + 77]

RULES = {
    # name: (optimizer class, its kwargs)
    "adamw": (fusedopt.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "adam_l2_amsgrad": (fusedopt.Adam, dict(lr=1e-2, weight_decay=0.05, amsgrad=True)),
    "adam_maximize": (fusedopt.Adam, dict(lr=1e-2, maximize=True)),
    "sgd": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, dampening=0.0)),
    # (lr_decay != 0: fp32 Adagrad's native and reference steps differ by an ulp of
    # clr already, so 8-bit ones cannot agree bit for bit; not compared here)
    "adagrad": (fusedopt.Adagrad, dict(lr=0.1, initial_accumulator_value=0.1, weight_decay=0.01)),
    "lion": (fusedopt.Lion, dict(lr=1e-3, weight_decay=0.1)),
}


def _random_states(rule, active, params):
    """Quantized random states (squares non-negative), as codes then scales."""
    codes, scales = [], []
    for k in range(active):
        signed = rule.signed[k]
        for p in params:
            x = torch.randn(p.shape)
            x = x if signed else x.square()
            c, a = quantize_blockwise(x, signed)
            codes.append(c)
            scales.append(a)
    return codes + scales


def _clone(ts):
    return [t.clone() for t in ts]


def _bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16) if t.element_size() == 2 else t


def _equal_bits(a, b):
    return all(torch.equal(_bits(x), _bits(y)) for x, y in zip(a, b))


# -- the list ops: native == reference, bit for bit ------------------------------------------


def _op_case(name):
    cls, kw = RULES[name]
    opt = cls([torch.nn.Parameter(torch.zeros(1))], **kw)
    group = opt.param_groups[0]
    rule = cls.rule
    return rule, rule.active(group), opt._hyper(group, native=True)


@requires_native_cpu
@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("param_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("amp", ["none", "scale_clip", "skip"])
def test_list_op_matches_reference(name, param_dtype, amp):
    rule, active, hyper = _op_case(name)
    params = [torch.randn(n).to(param_dtype) for n in SIZES]
    masters = [p.float() for p in params] if param_dtype != torch.float32 else []
    states = _random_states(rule, active, params)
    counters = []
    if rule.counter is not None:
        counters = [torch.full((), 3.0) for _ in params]
    elif rule.name == "sgd":
        counters = [torch.tensor(i % 2 == 0) for i in range(len(params))]
    grad_scale = found_inf = sumsq = None
    max_norm = max_value = 0.0
    if amp != "none":
        grad_scale = torch.tensor(1024.0)
        found_inf = torch.tensor(1.0 if amp == "skip" else 0.0)
        sumsq = torch.tensor(50.0)
        max_norm, max_value = 1.0, 3.0 * 1024
    a = [_clone(params), _clone(states), _clone(counters), _clone(masters)]
    b = [_clone(params), _clone(states), _clone(counters), _clone(masters)]
    exact = name in EXACT
    for step in range(3 if exact else 1):
        grads = [torch.randn(p.shape).to(param_dtype) * (1024.0 if grad_scale is not None else 1.0) for p in params]
        tail = (hyper, None, 0.01, None, grad_scale, found_inf, sumsq, max_norm, max_value, False)
        getattr(torch.ops.fusedopt, rule.name + "_")(a[0], grads, a[1], a[2], a[3], *tail)
        _reference_quant8.step(rule.reference, rule.signed, b[0], grads, b[1], b[2], b[3], *tail)
        assert _equal_bits(a[1], b[1]) and _equal_bits(a[2], b[2])
        for x, y in (a[0], b[0]), (a[3], b[3]):
            if exact:
                assert _equal_bits(x, y)
            else:
                for u, v in zip(x, y):
                    torch.testing.assert_close(u, v, **fp32_tol())
    if amp == "skip":
        assert _equal_bits(a[0], params) and _equal_bits(a[1], states)


@requires_native_cpu
def test_list_op_threads_cut_at_blocks():
    """Many threads (each share cut at a block start) give the one-thread bits."""
    rule, active, hyper = _op_case("adamw")
    params = [torch.randn(300_001), torch.randn(70_000)]
    states = _random_states(rule, active, params)
    grads = [torch.randn(p.shape) for p in params]
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 4):
            torch.set_num_threads(n)
            p, s, c = _clone(params), _clone(states), [torch.full((), 1.0) for _ in params]
            torch.ops.fusedopt.adam_(p, grads, s, c, [], hyper, None, 1e-2, None, None, None, None, 0.0, 0.0, False)
            outs.append(p + s)
    finally:
        torch.set_num_threads(threads)
    assert _equal_bits(outs[0], outs[1])


@requires_native_cpu
def test_list_op_refuses_bad_8bit_lists():
    rule, active, hyper = _op_case("adamw")
    params = [torch.randn(1000)]
    grads = [torch.randn(1000)]
    steps = [torch.zeros(())]
    good = _random_states(rule, active, params)

    def call(states, ps=params):
        torch.ops.fusedopt.adam_(ps, grads, states, steps, [], hyper, None, 1e-2, None, None, None, None, 0.0, 0.0,
                                 False)

    cases = [
        (good[:1] + [torch.zeros(999, dtype=torch.uint8)] + good[2:], "codes but params"),
        (good[:2] + [torch.zeros(3)] + good[3:], "need 4"),
        (good[:2] + [torch.zeros(4, dtype=torch.float64)] + good[3:], "float32"),
        (good[:1] + [torch.zeros(2000, dtype=torch.uint8)[::2]] + good[2:], "not contiguous"),
        (good[:1] + [torch.zeros(1000)] + good[2:], "uint8"),
        (good[:3], r"\(2\), got 3 \(8-bit states: 4"),
    ]
    for states, msg in cases:
        before = [p.clone() for p in params] + [s.clone() for s in states]
        with pytest.raises(RuntimeError, match=msg):
            call(states)
        assert _equal_bits(before, params + states)
    # the params themselves must be contiguous
    p = torch.randn(40, 25).t()
    with pytest.raises(RuntimeError, match="need contiguous params"):
        torch.ops.fusedopt.adam_([p], [torch.randn(40, 25).t()], _random_states(rule, active, [p.contiguous()]),
                                 steps, [], hyper, None, 1e-2, None, None, None, None, 0.0, 0.0, False)


# -- the optimizers: native == reference ------------------------------------------------------


def _train(name, native, monkeypatch, steps=4, dtype=torch.float32, master=False, clip=False, scaler=False):
    cls, kw = RULES[name]
    torch.manual_seed(1)
    shapes = [(64, 80), (5000,), (300,), (17, 33)]
    params = [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in shapes]
    opt = cls(params, state_dtype="8bit", min_8bit_size=256, master_weights=master,
              max_grad_norm=1.0 if clip else None, **kw)
    with monkeypatch.context() as m:
        if not native:
            m.setattr(_ops, "ops_for", lambda device: _ops.reference)
            m.setattr(_native_plan, "available", lambda device: False)
        for step in range(steps):
            g = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(dtype)
            if scaler:
                # an AMP step through torch's protocol, every other one skipped
                opt.grad_scale = torch.tensor(8.0)
                opt.found_inf = torch.tensor(float(step % 2))
                for p in params:
                    p.grad.mul_(8.0)
            opt.step()
    return params, opt


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("variant", ["plain", "bf16_master", "clip_scaler"])
def test_optimizer_native_matches_reference(name, variant, monkeypatch):
    kw = dict(
        plain={}, bf16_master=dict(dtype=torch.bfloat16, master=True), clip_scaler=dict(clip=True, scaler=True),
    )[variant]
    steps = 4 if name in EXACT else 1
    pa, oa = _train(name, True, monkeypatch, steps=steps, **kw)
    pb, ob = _train(name, False, monkeypatch, steps=steps, **kw)
    if name in EXACT:
        assert _equal_bits(pa, pb)
    else:
        for p, q in zip(pa, pb):
            torch.testing.assert_close(p, q, **fp32_tol())
    for p, q in zip(pa, pb):
        sa, sb = oa.state[p], ob.state[q]
        assert sorted(sa) == sorted(sb)
        for k in sa:
            if k == "master_param" and name not in EXACT:
                torch.testing.assert_close(sa[k], sb[k], **fp32_tol())  # a param: through the sqrt
            else:
                assert _equal_bits([sa[k]], [sb[k]]), k
    if _ops.CPU_LIB.loaded:
        assert oa.step_backends().get("reference", 0) == 0  # every 8-bit param ran natively


def test_state_format_and_threshold():
    big = torch.nn.Parameter(torch.randn(100, 50))
    small = torch.nn.Parameter(torch.randn(10))
    ints = torch.nn.Parameter(torch.zeros(5000, dtype=torch.float64))
    opt = fusedopt.AdamW([big, small, ints], state_dtype="8bit", min_8bit_size=100, amsgrad=True)
    for p in (big, small, ints):
        p.grad = torch.randn_like(p)
    opt.step()
    st = opt.state[big]
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert st[name].dtype == torch.uint8 and st[name].shape == big.shape
        assert st[name + "_absmax"].dtype == torch.float32 and st[name + "_absmax"].shape == (num_blocks(5000),)
    assert opt.state[small]["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in opt.state[small]
    # a float64 param is floating: 8-bit as well (its update runs on the reference)
    assert opt.state[ints]["exp_avg"].dtype == torch.uint8
    # the first moment after one AdamW step from zero is (1 - beta1) * grad, quantized
    m = dequantize_blockwise(st["exp_avg"], st["exp_avg_absmax"], True)
    ref = quantize_blockwise(0.1 * big.grad.float(), True)
    assert torch.allclose(m, dequantize_blockwise(*ref, True), rtol=0, atol=1e-7)


def test_skipped_amp_step_keeps_codes_and_scales():
    p = torch.nn.Parameter(torch.randn(3000))
    opt = fusedopt.AdamW([p], state_dtype="8bit", min_8bit_size=0)
    p.grad = torch.randn_like(p)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    p0 = p.detach().clone()
    opt.grad_scale, opt.found_inf = torch.tensor(2.0), torch.tensor(1.0)
    opt.step()
    assert torch.equal(p, p0)
    for k, v in opt.state[p].items():
        assert torch.equal(v, before[k]), k


def test_errors():
    p = torch.nn.Parameter(torch.randn(10))
    with pytest.raises(ValueError, match="Invalid state_dtype: '4bit'"):
        fusedopt.AdamW([p], state_dtype="4bit")
    with pytest.raises(ValueError, match="Invalid min_8bit_size"):
        fusedopt.AdamW([p], state_dtype="8bit", min_8bit_size=-1)
    with pytest.raises(ValueError, match="differentiable=True"):
        fusedopt.Adam([p], state_dtype="8bit", differentiable=True)
    # SGD's sparse grads go to torch's own SGD, which has no 8-bit buffer
    e = torch.nn.Parameter(torch.randn(20, 4))
    opt = fusedopt.SGD([e], lr=0.1, momentum=0.9, state_dtype="8bit", min_8bit_size=0)
    e.grad = torch.sparse_coo_tensor([[1, 3]], torch.ones(2, 4), (20, 4))
    e0 = e.detach().clone()
    with pytest.raises(RuntimeError, match="dense grads"):
        opt.step()
    assert torch.equal(e, e0) and not opt.state[e]


@requires_native_cpu
@pytest.mark.parametrize("signed", [True, False])
def test_codes_at_every_threshold_are_the_references(signed):
    """The kernels' code search (a vectorized lookup) against torch's: values
    on, just below and just above every threshold of the map, zeros, tiny
    values and NaN. SGD's first applied momentum step stores the grad itself
    (signed map); Adam with beta2 = 0 stores g * g (unsigned map)."""
    from fusedopt._quant8 import map_tables

    _, thresholds = map_tables(signed)
    t = torch.tensor(thresholds, dtype=torch.float32)
    up = torch.nextafter(t, torch.tensor(float("inf")))
    down = torch.nextafter(t, torch.tensor(float("-inf")))
    vals = torch.cat([t, up, down, torch.tensor([0.0, -0.0, 1.0, -1.0, 1e-38, -1e-38])])
    vals = vals if signed else vals.abs()
    # blocks of 255 values and a 1.0 (their absmax: the values are the normalized ones)
    blocks = [torch.cat([chunk, torch.ones(1)]) for chunk in vals.split(255)]
    x = torch.cat(blocks)
    nan_block = torch.cat([torch.full((3,), float("nan")), torch.ones(253)])
    x = torch.cat([x, nan_block])
    hyper = [0.9, 0.0, 0.0, 0.0]  # momentum, dampening, weight_decay, nesterov
    p = [torch.zeros(x.numel())]
    codes, absmax = quantize_blockwise(torch.zeros(x.numel()), True)
    states = [codes.clone(), absmax.clone()]
    # sgd_ quantizes its buffer with the signed map; the unsigned map is the
    # second state of Adam with beta2 = 0 and a grad whose square is x
    if signed:
        torch.ops.fusedopt.sgd_(p, [x], states, [torch.tensor(True)], [], hyper, None, 0.0, None, None, None, None,
                                0.0, 0.0, False)
        want = quantize_blockwise(x, True)
        got = states
    else:
        m0, a0 = quantize_blockwise(torch.zeros(x.numel()), True)
        v0, b0 = quantize_blockwise(torch.zeros(x.numel()), False)
        st = [m0, v0, a0, b0]
        g = x.sqrt()
        # exp_avg_sq = beta2 * 0 + (1 - beta2) * g * g with beta2 = 0: g * g, which is x
        # only where the square root is exact; compare against torch's quantization of g * g
        torch.ops.fusedopt.adam_(p, [g], st, [torch.zeros(())], [], [0.9, 0.0, 1e-8, 0.0, 1.0, 0.0], None, 0.0,
                                 None, None, None, None, 0.0, 0.0, False)
        want = quantize_blockwise(g * g, False)
        got = [st[1], st[3]]
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1].nan_to_num(7.0), want[1].nan_to_num(7.0))


def test_compiled_step_matches_eager():
    """torch.compile(fullgraph=True) of a step with 8-bit states: the same
    params, codes and scales as the eager steps; the weight's last block is
    partial (64 of 256), where inductor once miscompiled the plain-torch path."""
    torch.manual_seed(0)
    base = torch.nn.Linear(64, 41)
    grads = [[torch.randn_like(p) for p in base.parameters()] for _ in range(3)]
    out = []
    for compiled in (False, True):
        model = torch.nn.Linear(64, 41)
        model.load_state_dict(base.state_dict())
        opt = fusedopt.AdamW(model.parameters(), state_dtype="8bit", min_8bit_size=1000, max_grad_norm=1.0)
        step = torch.compile(opt.step, fullgraph=True) if compiled else opt.step
        for gs in grads:
            for p, g in zip(model.parameters(), gs):
                p.grad = g.clone()
            step()
        st = opt.state[model.weight]
        out.append([model.weight.detach(), model.bias.detach(), st["exp_avg"], st["exp_avg_absmax"],
                    st["exp_avg_sq"], st["exp_avg_sq_absmax"]])
    assert out[0][2].dtype == torch.uint8
    if _ops.CPU_LIB.loaded:
        assert _equal_bits(out[0], out[1])  # both run the native op
        return
    # the plain-torch update, compiled by inductor, rounds as fp32 compiled
    # steps do (tests/test_compile.py: fp32_tol); a state then may move by one
    # code (at most the map's widest gap, 0.9 / 64 of its block's absmax)
    for a, b in zip(out[0][:2], out[1][:2]):
        torch.testing.assert_close(a, b, **fp32_tol())
    for (ca, aa, cb, ab), signed in zip([out[0][2:4] + out[1][2:4], out[0][4:6] + out[1][4:6]], (True, False)):
        da, db = dequantize_blockwise(ca, aa, signed), dequantize_blockwise(cb, ab, signed)
        torch.testing.assert_close(da, db, rtol=0, atol=float(aa.max()) * 0.9 / 64)


def test_sgd_without_momentum_runs_as_without_8bit():
    """No momentum, no state: the 8-bit setting changes nothing (the params
    stay in the native bucket they would be in without it)."""
    pa = torch.nn.Parameter(torch.randn(300, 20))
    pb = torch.nn.Parameter(pa.detach().clone())
    oa = fusedopt.SGD([pa], lr=0.1, state_dtype="8bit", min_8bit_size=0)
    ob = fusedopt.SGD([pb], lr=0.1)
    for o, p in ((oa, pa), (ob, pb)):
        p.grad = torch.ones_like(p)
        o.step()
    assert torch.equal(pa, pb) and not oa.state[pa]
    assert oa.step_backends() == ob.step_backends()
