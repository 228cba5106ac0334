"""The plain-torch fallback on torch's multi-tensor ops: lists split by device
and dtype, per-tensor step scalars computed for a whole group at once, and
still torch's single-tensor results bit for bit, for every dtype and layout
it serves (float64, complex, non-contiguous, tensor subclasses)."""

import pytest
import torch

import fusedopt
from fusedopt import _list_ops, _reference_sgd, reference
from fusedopt._adam_scalars import adam_host_scalars, adam_step_scalars

CPU = torch.device("cpu")


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype and x.shape == y.shape, f"tensor {i}"
        assert torch.equal(_bits(x), _bits(y)), f"tensor {i} ({x.dtype}, {tuple(x.shape)}) differs"


def test_adam_step_scalars_are_the_doubles_python_computes():
    """All of a group's counters go through one vector; ATen's vectorized pow
    would differ from Python's in the last bit for some step values."""
    counts = list(range(1, 2049)) + [10_000, 123_457, 2.0**24]
    steps = [torch.tensor(float(c)) for c in counts]
    bc2_sqrt, neg_step = adam_step_scalars(steps, 0.9, 0.999, 1e-3, None, CPU)
    for c, a, b in zip(counts, bc2_sqrt.tolist(), neg_step.tolist()):
        assert a == (1 - 0.999**c) ** 0.5, c
        assert b == -(1e-3 / (1 - 0.9**c)), c
    # a tensor lr: divided in its own dtype, as torch's `lr / bias_correction1`
    lr = torch.tensor(3e-4)
    _, neg_step = adam_step_scalars(steps, 0.9, 0.999, 0.0, lr, CPU)
    assert neg_step.dtype == torch.float32
    expected = torch.stack([-(lr / (1 - 0.9**c)) for c in counts])
    assert torch.equal(neg_step, expected)



def test_adam_host_scalars_are_the_device_ones_and_a_skipped_first_step_writes_nothing():
    """The CPU's host-side scalars are adam_step_scalars' doubles; a first step
    that a found_inf skips (its counters still 0 when the scalars are taken)
    raises nothing and leaves every bit as it was."""
    counts = list(range(1, 300)) + [123_457]
    steps = [torch.tensor(float(c)) for c in counts]
    bc2_sqrt, neg_step = adam_host_scalars(steps, 0.9, 0.999, 1e-3)
    bc2_dev, neg_dev = adam_step_scalars(steps, 0.9, 0.999, 1e-3, None, CPU)
    assert bc2_sqrt == bc2_dev.tolist() and neg_step == neg_dev.tolist()

    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(5, generator=gen), torch.randn(3, 4, generator=gen)]
    states = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    counters = [torch.zeros(()) for _ in params]
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    before = [t.clone() for t in params + states[0] + states[1] + counters]
    reference.adam_(params, grads, *states, [], counters, [], 1e-3, None, 0.9, 0.999, 1e-8, 0.01, True, False, False,
                    torch.full((1,), 2.0**16), torch.ones(1), None, 0.0)
    _assert_bitwise(params + states[0] + states[1] + counters, before)


SHAPES = [(3,), (0,), (), (17,), (5, 33), (1000,), (64, 64), (2, 3, 4)]
DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def _positive(x):
    """|x| elementwise, complex tensors in both parts (their second moments are so)."""
    if x.is_complex():
        return torch.view_as_complex(torch.view_as_real(x).abs())
    return x.abs()


def _mixed_params(gen):
    """Every shape in every dtype, interleaved: one call's lists hold all four."""
    return [torch.randn(s, generator=gen, dtype=dt) for s in SHAPES for dt in DTYPES]


@pytest.fixture(params=["one batch", "batches of 50 elements"])
def batches(request, monkeypatch):
    """The CPU update runs in batches of tensors (reference.BATCH_ELEMENTS):
    whole lists, and every few tensors."""
    if request.param != "one batch":
        monkeypatch.setattr(reference, "BATCH_ELEMENTS", 50)


@pytest.mark.parametrize(
    "amsgrad,weight_decay,decoupled,maximize,tensor_lr",
    [(False, 0.0, False, False, False), (True, 0.1, False, True, False), (False, 0.1, True, False, True),
     (True, 0.1, True, True, True)],
)
@pytest.mark.parametrize("found_inf", [None, "zero"])
def test_adam_on_mixed_dtypes_and_staggered_steps_is_torch_bit_for_bit(
    amsgrad, weight_decay, decoupled, maximize, tensor_lr, found_inf, batches
):
    """found_inf == 0: the update computed in copies and selected back is the same update."""
    gen = torch.Generator().manual_seed(0)
    ps = _mixed_params(gen)
    qs = [p.clone() for p in ps]
    lr = torch.tensor(0.01) if tensor_lr else 0.01
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = cls(qs, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, foreach=False)
    # params that joined at different times: every counter at another value
    m, v, vmax = ([torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps] for _ in range(3))
    v, vmax = [_positive(x) for x in v], [_positive(x) for x in vmax]
    steps = [torch.tensor(float(3 * i + 1)) for i in range(len(ps))]
    for q, a, b, c, s in zip(qs, m, v, vmax, steps):
        opt.state[q] = {"step": s.clone(), "exp_avg": a.clone(), "exp_avg_sq": b.clone()}
        if amsgrad:
            opt.state[q]["max_exp_avg_sq"] = c.clone()
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps]
        for q, g in zip(qs, grads):
            q.grad = g.clone()
        opt.step()
        reference.adam_(ps, grads, m, v, vmax, steps, [], 0.0 if tensor_lr else lr, lr if tensor_lr else None,
                        0.9, 0.999, 1e-8, weight_decay, decoupled, amsgrad, maximize, None,
                        None if found_inf is None else torch.zeros(1), None, 0.0)
    _assert_bitwise(ps, qs)
    _assert_bitwise(m, [opt.state[q]["exp_avg"] for q in qs])
    _assert_bitwise(v, [opt.state[q]["exp_avg_sq"] for q in qs])
    _assert_bitwise(steps, [opt.state[q]["step"] for q in qs])
    if amsgrad:
        _assert_bitwise(vmax, [opt.state[q]["max_exp_avg_sq"] for q in qs])


@pytest.mark.parametrize("momentum,dampening,nesterov", [(0.9, 0.0, False), (0.9, 0.0, True), (0.8, 0.25, False)])
def test_sgd_first_step_copies_the_grad_every_bit(momentum, dampening, nesterov, batches):
    """The first applied step makes the buffer the grad itself: negative zeros
    stay negative (torch's clone), with or without dampening."""
    gen = torch.Generator().manual_seed(2)
    ps = _mixed_params(gen)
    qs = [p.clone() for p in ps]
    opt = torch.optim.SGD(qs, lr=0.1, momentum=momentum, dampening=dampening, nesterov=nesterov,
                          weight_decay=0.0, foreach=False)
    bufs = [torch.zeros_like(p) for p in ps]
    first = [torch.ones((), dtype=torch.bool) for _ in ps]
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps]
        for g in grads:
            real = torch.view_as_real(g) if g.is_complex() else g
            real.view(-1)[::3] = -0.0
        for q, g in zip(qs, grads):
            q.grad = g.clone()
        opt.step()
        _reference_sgd.sgd_(ps, grads, bufs, first, [], 0.1, None, momentum, dampening, 0.0, nesterov, False,
                       None, None, None, 0.0)
    _assert_bitwise(ps, qs)
    _assert_bitwise(bufs, [opt.state[q]["momentum_buffer"] for q in qs])
    assert not any(bool(f) for f in first)


class _Tagged(torch.Tensor):
    """A subclass with torch's default __torch_function__ (as a library might tag its weights)."""


@pytest.mark.parametrize("layout", ["transposed", "subclass"])
@pytest.mark.parametrize("cls", ["AdamW", "SGD"])
def test_non_contiguous_and_subclass_params_match_torch_bit_for_bit(layout, cls):
    gen = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (64, 33), (3, 9)]

    def make():
        g = torch.Generator().manual_seed(4)
        out = []
        for s in shapes:
            t = torch.randn(s[::-1], generator=g).t() if layout == "transposed" else torch.randn(s, generator=g)
            out.append(torch.nn.Parameter(t.as_subclass(_Tagged) if layout == "subclass" else t))
        return out

    pa, pb = make(), make()
    kw = dict(lr=0.01, weight_decay=0.1) if cls == "AdamW" else dict(lr=0.01, momentum=0.9, nesterov=True)
    ours = getattr(fusedopt, cls)(pa, **kw)
    theirs = getattr(torch.optim, cls)(pb, foreach=False, **kw)
    if layout == "subclass":
        assert _list_ops.ops_for(pa) is _list_ops.LOOP  # one ATen op per tensor, as torch's single-tensor path
    else:
        assert not pa[0].is_contiguous()
    for _ in range(4):
        for a, b in zip(pa, pb):
            g = torch.randn(a.shape[::-1], generator=gen).t() if layout == "transposed" else torch.randn(
                a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert ours.step_backends() == {"reference": len(shapes)}
    _assert_bitwise([p.detach().as_subclass(torch.Tensor) for p in pa],
                    [p.detach().as_subclass(torch.Tensor) for p in pb])


def test_traced_grouping_is_the_eager_one_bit_for_bit():
    """Under torch.compile the lists are grouped in Python (torch's C++ helper
    does not trace): float32 and float64 params in one call, as eagerly."""
    gen = torch.Generator().manual_seed(5)

    def state():
        g = torch.Generator().manual_seed(6)
        ps = [torch.randn(s, generator=g, dtype=dt) for s in [(7,), (3, 4)] for dt in (torch.float32, torch.float64)]
        return ps, [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps], [torch.zeros(()) for _ in ps]

    eager, traced = state(), state()
    grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in eager[0]]

    def step(ps, m, v, steps):
        reference.adam_(ps, grads, m, v, [], steps, [], 0.01, None, 0.9, 0.999, 1e-8, 0.1, True, False, False,
                        None, None, None, 0.0)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="eager")
    for _ in range(3):
        step(*eager)
        compiled(*traced)
    for a, b in zip(eager, traced):
        _assert_bitwise(a, b)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
@pytest.mark.parametrize("found_inf", [None, 0.0, 1.0])
def test_batches_and_pieces_change_no_bit(kind, found_inf, monkeypatch):
    """Half-precision params with float32 masters, bfloat16 states, a found_inf
    (skipping or not): updated in pieces of 50 elements as in one batch."""
    def run(batch):
        monkeypatch.setattr(reference, "BATCH_ELEMENTS", batch)
        gen = torch.Generator().manual_seed(7)
        ps = [torch.randn(s, generator=gen).to(torch.bfloat16) for s in [(130,), (3, 41), (7,), (64, 9)]]
        masters = [p.float() for p in ps]
        states = [[torch.randn(p.shape, generator=gen).abs().to(torch.bfloat16) for p in ps] for _ in range(3)]
        first = [torch.tensor(i % 2 == 0) for i in range(len(ps))]
        steps = [torch.tensor(float(i + 1)) for i in range(len(ps))]
        for _ in range(3):
            grads = [torch.randn(p.shape, generator=gen) for p in ps]
            amp = (torch.full((), 8.0), None if found_inf is None else torch.full((1,), found_inf),
                   torch.full((1,), 9.0), 1.0, 0.5)
            if kind == "adam":
                reference.adam_(ps, grads, *states, steps, masters, 0.01, None, 0.9, 0.999, 1e-8, 0.1, True, True,
                                False, *amp)
            else:
                _reference_sgd.sgd_(ps, grads, states[0], first, masters, 0.1, None, 0.9, 0.2, 0.1, False, True, *amp)
        return ps + masters + states[0] + states[1] + states[2] + steps + first

    _assert_bitwise(run(50), run(1 << 30))
