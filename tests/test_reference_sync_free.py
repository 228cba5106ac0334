"""fusedopt.reference never reads a device value on the host, and still
computes torch's numbers: the per-step scalars (bias corrections, a tensor lr,
the found_inf skip, SGD's first-step flag) live in 0-dim tensors.

The meta device proves the first half on the CPU: any host read of a meta
tensor raises. The bitwise comparisons prove the second: the 0-dim tensor
arithmetic is the double arithmetic torch's single-tensor code does on the
host."""

import itertools

import pytest
import torch

import fusedopt
from fusedopt import _reference_sgd, reference

SHAPES = [(3,), (17,), (5, 33), (1000,)]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The stored bits, so that NaN payloads and -0.0 count as they are."""
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64, 1: torch.uint8}[t.element_size()])


def _lockstep(torch_opt, qs, gen, dtype, steps, ours):
    """`steps` steps of a torch optimizer on qs and of `ours(grads)`, same grads."""
    for _ in range(steps):
        grads = [torch.randn(q.shape, generator=gen, dtype=dtype) for q in qs]
        for q, g in zip(qs, grads):
            q.grad = g.clone()
        torch_opt.step()
        ours(grads)


def _assert_bitwise(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype, f"tensor {i}"
        assert torch.equal(_bits(x), _bits(y)), f"tensor {i} differs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tensor_lr", [False, True])
@pytest.mark.parametrize(
    "amsgrad,weight_decay,decoupled,maximize",
    [(False, 0.0, False, False), (True, 0.1, False, True), (False, 0.1, True, False), (True, 0.1, True, True)],
)
def test_adam_reference_is_torch_single_tensor_bit_for_bit(dtype, tensor_lr, amsgrad, weight_decay, decoupled, maximize):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    qs = [p.clone() for p in ps]
    lr = torch.tensor(0.01) if tensor_lr else 0.01
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = cls(qs, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, foreach=False)
    m, v, vmax = ([torch.zeros_like(p) for p in ps] for _ in range(3))
    steps = [torch.zeros((), dtype=torch.float32) for _ in ps]
    _lockstep(opt, qs, gen, dtype, 6, lambda grads: reference.adam_(
        ps, grads, m, v, vmax, steps, [], 0.0 if tensor_lr else lr, lr if tensor_lr else None,
        0.9, 0.999, 1e-8, weight_decay, decoupled, amsgrad, maximize, None, None, None, 0.0))
    _assert_bitwise(ps, qs)
    _assert_bitwise(m, [opt.state[q]["exp_avg"] for q in qs])
    _assert_bitwise(v, [opt.state[q]["exp_avg_sq"] for q in qs])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tensor_lr", [False, True])
@pytest.mark.parametrize(
    "momentum,dampening,weight_decay,nesterov,maximize",
    [(0.0, 0.0, 0.0, False, False), (0.9, 0.3, 0.1, False, True), (0.9, 0.0, 0.1, True, False)],
)
def test_sgd_reference_is_torch_bit_for_bit(dtype, tensor_lr, momentum, dampening, weight_decay, nesterov, maximize):
    """A float lr: torch's default path. A tensor lr: torch's device-side form of
    the update, ``addcmul_(grad, lr, value=-1)``, which torch runs for an lr that
    requires grad (its default path reads a tensor lr on the host)."""
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    qs = [p.clone() for p in ps]
    if tensor_lr:
        lr = torch.tensor(0.01, requires_grad=True)
        extra = dict(differentiable=True)
    else:
        lr, extra = 0.01, {}
    opt = torch.optim.SGD(qs, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                          nesterov=nesterov, maximize=maximize, foreach=False, **extra)
    bufs = [torch.zeros_like(p) for p in ps]
    first = [torch.ones((), dtype=torch.bool) for _ in ps]
    _lockstep(opt, qs, gen, dtype, 5, lambda grads: _reference_sgd.sgd_(
        ps, grads, bufs, first, [], 0.0 if tensor_lr else lr, lr.detach() if tensor_lr else None,
        momentum, dampening, weight_decay, nesterov, maximize, None, None, None, 0.0))
    _assert_bitwise(ps, [q.detach() for q in qs])
    if momentum:
        _assert_bitwise(bufs, [opt.state[q]["momentum_buffer"].detach() for q in qs])


def _adam_tensors(dtype, master):
    gen = torch.Generator().manual_seed(1)
    shapes = [(4,), (3, 5)]
    ps = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    masters = [p.float() for p in ps] if master else []
    sd = torch.float32 if master else dtype
    m = [torch.randn(p.shape, generator=gen).to(sd) for p in ps]
    v = [torch.rand(p.shape, generator=gen).to(sd) for p in ps]
    vmax = [x.clone() for x in v]
    m[0].view(-1)[0] = float("nan")  # a NaN in the state must keep its bits on a skipped step
    steps = [torch.full((), 3.0) for _ in ps]
    grads = [torch.randn(p.shape, generator=gen).to(dtype) for p in ps]
    grads[1].view(-1)[2] = float("inf")
    return ps, grads, m, v, vmax, steps, masters


@pytest.mark.parametrize("dtype,master", [(torch.float32, False), (torch.float64, False), (torch.bfloat16, True),
                                          (torch.complex64, False)])
def test_adam_found_inf_skips_on_the_device_leaving_every_bit(dtype, master):
    ps, grads, m, v, vmax, steps, masters = _adam_tensors(dtype, master)
    before = [t.clone() for t in ps + m + v + vmax + steps + masters]
    scale = torch.full((), 1024.0)
    reference.adam_(ps, grads, m, v, vmax, steps, masters, 0.01, torch.tensor(0.02), 0.9, 0.999, 1e-8, 0.1, True,
                    True, False, scale, torch.ones(1), torch.full((1,), 4.0), 1.0)
    _assert_bitwise(ps + m + v + vmax + steps + masters, before)


def test_adam_found_inf_zero_is_the_unmasked_update_bit_for_bit():
    a = _adam_tensors(torch.bfloat16, True)
    b = [[t.clone() for t in lst] for lst in a]
    for g in a[1] + b[1]:
        g.nan_to_num_(posinf=1.0)
    common = (0.01, None, 0.9, 0.999, 1e-8, 0.1, True, True, False, torch.full((), 8.0))
    reference.adam_(*a[:7], *common, torch.zeros(1), torch.full((1,), 4.0), 1.0)
    reference.adam_(*b[:7], *common, None, torch.full((1,), 4.0), 1.0)
    for x, y in zip(a, b):
        _assert_bitwise(x, y)
    assert all(float(s) == 4.0 for s in a[5])


def test_sgd_first_step_flag_waits_for_an_applied_step():
    """A skipped first step keeps the flag set; the next applied step starts the
    buffer as a copy of its grad, as torch's first step does."""
    p = [torch.randn(6)]
    buf = [torch.zeros(6)]
    first = [torch.ones((), dtype=torch.bool)]
    g_bad = [torch.full((6,), float("inf"))]
    _reference_sgd.sgd_(p, g_bad, buf, first, [], 0.1, None, 0.9, 0.0, 0.0, False, False, None, torch.ones(1), None, 0.0)
    assert bool(first[0]) and torch.equal(buf[0], torch.zeros(6))
    g = [torch.randn(6)]
    p0 = p[0].clone()
    _reference_sgd.sgd_(p, g, buf, first, [], 0.1, None, 0.9, 0.0, 0.0, False, False, None, torch.zeros(1), None, 0.0)
    assert not bool(first[0])
    _assert_bitwise(buf, g)
    _assert_bitwise(p, [p0.add(g[0], alpha=-0.1)])


CASES = [
    (fusedopt.AdamW, dict(max_grad_norm=1.0)),
    (fusedopt.Adam, dict(lr=torch.tensor(0.01), amsgrad=True, maximize=True, weight_decay=0.1)),
    (fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, max_grad_norm=1.0)),
    (fusedopt.SGD, dict(lr=torch.tensor(0.1), master_weights=True)),
]


@pytest.mark.parametrize("cls,kw", CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_steps_on_the_meta_device_like_torch(cls, kw):
    """torch's optimizers step meta params (model sizing, deferred init); any
    host read of a device value would raise here."""
    shapes = [(4, 3), (5,)]
    dtype = torch.bfloat16 if kw.get("master_weights") else torch.float32
    params = [torch.nn.Parameter(torch.empty(s, device="meta", dtype=dtype)) for s in shapes]
    opt = cls(params, **kw)
    for step in range(2):
        for p in params:
            p.grad = torch.empty_like(p)
        if step:
            # the AMP protocol, as torch.amp.GradScaler drives it
            opt.grad_scale = torch.empty((), device="meta")
            opt.found_inf = torch.empty((1,), device="meta")
        opt.step()
    if kw.get("max_grad_norm"):
        assert opt.last_grad_norm.is_meta
    torch_cls = getattr(torch.optim, cls.__name__)
    torch_kw = {k: v for k, v in kw.items() if k not in ("max_grad_norm", "master_weights")}
    ref = [torch.nn.Parameter(torch.empty(s, device="meta", dtype=dtype)) for s in shapes]
    topt = torch_cls(ref, **torch_kw)
    for p in ref:
        p.grad = torch.empty_like(p)
    topt.step()
    for p, q in zip(params, ref):
        assert p.is_meta
        # the state torch keeps, on the devices torch keeps it (a meta param's
        # step counter lives on the CPU); fusedopt's own keys on the meta device
        assert set(topt.state[q]) <= set(opt.state[p])
        for key, value in opt.state[p].items():
            expected = topt.state[q][key].device.type if key in topt.state[q] else "meta"
            assert value.device.type == expected, key


def test_grad_stats_and_unscale_on_the_meta_device():
    grads = [torch.empty(5, device="meta"), torch.empty(2, 3, device="meta", dtype=torch.bfloat16)]
    found, sumsq = torch.empty(1, device="meta"), torch.empty(1, device="meta")
    reference.grad_stats_(grads, torch.empty((), device="meta"), found, sumsq)
    reference.unscale_(grads, found, torch.empty((), device="meta"))


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_reference_traces_without_graph_breaks(kind):
    """torch.compile(fullgraph=True) refuses any host read (.item(), float(t),
    bool(t)): the reference traces whole, found_inf, tensor lr and all."""
    params = [torch.randn(7), torch.randn(2, 3)]
    grads = [torch.randn_like(p) for p in params]
    found, scale, sumsq = torch.zeros(1), torch.full((), 2.0), torch.full((1,), 9.0)
    if kind == "adam":
        states = [[torch.zeros_like(p) for p in params] for _ in range(3)]
        steps = [torch.zeros(()) for _ in params]

        def fn(lr):
            reference.adam_(params, grads, *states, steps, [], 0.0, lr, 0.9, 0.999, 1e-8, 0.1, True, True, False,
                            scale, found, sumsq, 1.0)
    else:
        bufs = [torch.zeros_like(p) for p in params]
        first = [torch.ones((), dtype=torch.bool) for _ in params]

        def fn(lr):
            _reference_sgd.sgd_(params, grads, bufs, first, [], 0.0, lr, 0.9, 0.1, 0.0, False, False, scale, found, sumsq,
                           1.0)

    torch._dynamo.reset()
    torch.compile(fn, fullgraph=True, backend="eager")(torch.tensor(0.01))


def test_adam_reference_with_tensor_betas_matches_torch():
    """Tensor betas (the compiled step's route, and CUDA betas' in eager) stay
    tensors in the update; torch reads them as it goes."""
    from helpers import fp32_tol

    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen) for s in SHAPES]
    qs = [p.clone() for p in ps]
    betas = (torch.tensor(0.8), torch.tensor(0.95))
    opt = torch.optim.AdamW(qs, lr=0.01, betas=betas, weight_decay=0.1, foreach=False)
    m, v = ([torch.zeros_like(p) for p in ps] for _ in range(2))
    steps = [torch.zeros(()) for _ in ps]
    _lockstep(opt, qs, gen, torch.float32, 6, lambda grads: reference.adam_(
        ps, grads, m, v, [], steps, [], 0.01, None, *betas, 1e-8, 0.1, True, False, False, None, None, None, 0.0))
    for a, b in zip(ps, qs):
        torch.testing.assert_close(a, b, **fp32_tol())
