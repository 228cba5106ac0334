"""stochastic_rounding=True on the optimizers: each step is the optimizer's fp32
update of the param (as an fp32 param with fp32 states) stored with
fusedopt._stochastic's rounding keyed by (param seed, applied step, element
index); deterministic, resumable from a state_dict, independent of bucketing,
still under a skipped AMP step, and refused with nothing modified where it
cannot apply."""

import copy

import pytest
import torch

import fusedopt
from fusedopt import _stochastic as sr

RULES = [
    (fusedopt.AdamW, {"weight_decay": 0.1}),
    (fusedopt.Adam, {"amsgrad": True}),
    (fusedopt.SGD, {"momentum": 0.9, "nesterov": True}),
    (fusedopt.SGD, {}),
    (fusedopt.Adagrad, {"weight_decay": 0.01}),
    (fusedopt.Lion, {"weight_decay": 0.1}),
]
SHAPES = [(37, 11), (5,), (3, 4, 65)]  # tails of every vector width


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def _grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]


def _bits(ts):
    return [t.detach().view(torch.int16).clone() for t in ts]


@pytest.mark.parametrize("cls,kw", RULES, ids=lambda x: getattr(x, "__name__", str(x)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("clip", [False, True])
def test_each_step_is_the_fp32_update_rounded(cls, kw, dtype, clip):
    """The oracle: the same optimizer on fp32 params with fp32 states, its
    params set to the rounded params before each step; its result rounded by
    fusedopt._stochastic with the key's seed, the step number and offset 0."""
    opts = {"max_grad_norm": 1.0, "max_grad_value": 0.5} if clip else {}
    params = _params(dtype)
    opt = cls(params, lr=1e-2, stochastic_rounding=True, seed=123, state_dtype=torch.float32, **kw, **opts)
    shadow = [torch.nn.Parameter(p.detach().float()) for p in params]
    ref = cls(shadow, lr=1e-2, **kw, **opts)
    for step in range(1, 4):
        for p, q, g in zip(params, shadow, _grads(params, step)):
            p.grad, q.grad = g, g.float()
            q.data.copy_(p.detach().float())
        opt.step()
        ref.step()
        for i, (p, q) in enumerate(zip(params, shadow)):
            key = opt.state[p]["rounding_key"]
            assert key.tolist() == [sr.as_int64(sr.splitmix64(123 + i)), step]
            want = sr.stochastic_round(q.detach(), dtype, sr.splitmix64(123 + i), step, 0)
            assert torch.equal(_bits([p])[0], _bits([want])[0]), (i, step)


def _run(cls, kw, steps, seed=7, groups=1, opt_kw=None):
    params = _params(torch.bfloat16)
    if groups == 1:
        spec = params
    else:
        spec = [{"params": params[:1]}, {"params": params[1:]}]
    opt = cls(spec, lr=1e-2, stochastic_rounding=True, seed=seed, **kw, **(opt_kw or {}))
    for step in range(steps):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    return params, opt


@pytest.mark.parametrize("cls,kw", RULES[:1] + RULES[4:], ids=lambda x: getattr(x, "__name__", str(x)))
def test_deterministic_and_seeded(cls, kw):
    a, _ = _run(cls, kw, 4)
    b, _ = _run(cls, kw, 4)
    c, _ = _run(cls, kw, 4, seed=8)
    assert all(map(torch.equal, _bits(a), _bits(b)))
    assert not all(map(torch.equal, _bits(a), _bits(c)))
    # seed=None: torch's seed, so torch.manual_seed makes runs repeat
    torch.manual_seed(3)
    d = cls(_params(torch.bfloat16), stochastic_rounding=True)
    torch.manual_seed(3)
    e = cls(_params(torch.bfloat16), stochastic_rounding=True)
    assert d.seed == e.seed == 3


@pytest.mark.parametrize("cls,kw", RULES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_independent_of_bucketing(cls, kw):
    """Two param groups bucket apart; the keys follow the flattened param list."""
    a, _ = _run(cls, kw, 3)
    b, _ = _run(cls, kw, 3, groups=2)
    assert all(map(torch.equal, _bits(a), _bits(b)))


@pytest.mark.parametrize("cls,kw", RULES, ids=lambda x: getattr(x, "__name__", str(x)))
@pytest.mark.parametrize("state_dtype", [None, "8bit"])
def test_state_dict_resume_continues_the_stream(cls, kw, state_dtype):
    opt_kw = {"state_dtype": state_dtype, "min_8bit_size": 16} if state_dtype else {}
    whole, _ = _run(cls, kw, 6, opt_kw=opt_kw)
    half, opt = _run(cls, kw, 3, opt_kw=opt_kw)
    saved = copy.deepcopy(opt.state_dict())
    params = [torch.nn.Parameter(p.detach().clone()) for p in half]
    resumed = cls(params, lr=1e-2, stochastic_rounding=True, seed=999, **kw, **opt_kw)  # the seed is the checkpoint's
    resumed.load_state_dict(saved)
    assert resumed.state[params[0]]["rounding_key"].dtype is torch.int64
    for step in range(3, 6):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        resumed.step()
    assert all(map(torch.equal, _bits(whole), _bits(params)))


def test_skipped_amp_step_keeps_params_and_stream():
    params, opt = _run(fusedopt.AdamW, {}, 2)
    before = _bits(params)
    keys = [opt.state[p]["rounding_key"].clone() for p in params]
    scaler = fusedopt.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))  # (makes the scale)
    for p, g in zip(params, _grads(params, 9)):
        p.grad = g
    params[1].grad[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert all(map(torch.equal, before, _bits(params)))
    assert all(torch.equal(k, opt.state[p]["rounding_key"]) for k, p in zip(keys, params))
    # the next applied step is step 3, as if the skipped one never happened
    for p, g in zip(params, _grads(params, 2)):
        p.grad = g * scaler.get_scale()
    scaler.step(opt)
    whole, _ = _run(fusedopt.AdamW, {}, 3)
    assert all(map(torch.equal, _bits(whole), _bits(params)))


def test_unbiased_on_updates_below_half_an_ulp():
    """p = 1 (bf16 ulp 2^-7 above it) moved by +1e-4 per step, 40 steps: round
    to nearest loses every update (1e-4 < 2^-8); stochastic rounding moves the
    mean by 40e-4. Each step's rounding error per element has mean 0 and std
    <= ulp/2, so after K steps the mean over N elements has std <= sqrt(K) *
    2^-8 / sqrt(N) = 7.8e-5 (K = 40, N = 2^16); asserted within 6 sigma."""
    n, k, lr = 2 ** 16, 40, 1e-4
    p = torch.nn.Parameter(torch.ones(n, dtype=torch.bfloat16))
    plain = torch.nn.Parameter(torch.ones(n, dtype=torch.bfloat16))
    opt = fusedopt.SGD([p], lr=lr, stochastic_rounding=True, seed=1)
    rne = fusedopt.SGD([plain], lr=lr)
    for _ in range(k):
        p.grad = torch.full_like(p, -1.0)
        plain.grad = torch.full_like(plain, -1.0)
        opt.step()
        rne.step()
    drift = p.double().mean().item() - 1.0
    sigma = (k ** 0.5) * 2.0 ** -8 / n ** 0.5
    assert abs(drift - k * lr) < 6 * sigma
    assert plain.double().mean().item() == 1.0  # what the test tells apart


def test_errors_before_any_write():
    p16 = torch.nn.Parameter(torch.randn(8, dtype=torch.bfloat16))
    p32 = torch.nn.Parameter(torch.randn(8))
    opt = fusedopt.AdamW([p16, p32], stochastic_rounding=True)
    p16.grad, p32.grad = torch.ones_like(p16), torch.ones_like(p32)
    before = _bits([p16])[0], p32.detach().clone()
    with pytest.raises(ValueError, match="param 1 is torch.float32"):
        opt.step()
    assert torch.equal(_bits([p16])[0], before[0]) and torch.equal(p32, before[1])
    assert len(opt.state) == 0
    p64 = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    p64.grad = torch.ones_like(p64)
    with pytest.raises(ValueError, match="float64"):
        fusedopt.SGD([p64], lr=0.1, stochastic_rounding=True).step()
    with pytest.raises(ValueError, match="master_weights"):
        fusedopt.AdamW([p16], stochastic_rounding=True, master_weights=True)
    with pytest.raises(ValueError, match="stochastic_rounding cannot be combined with differentiable"):
        fusedopt.Adam([p16], stochastic_rounding=True, differentiable=True)
    with pytest.raises(TypeError, match="stochastic_rounding must be a bool"):
        fusedopt.Lion([p16], stochastic_rounding=1)
    with pytest.raises(ValueError, match="Invalid seed"):
        fusedopt.Lion([p16], stochastic_rounding=True, seed=-1)
