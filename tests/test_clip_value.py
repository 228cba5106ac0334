"""fusedopt.clip_grad_value_ against torch.nn.utils.clip_grad_value_, and the
optimizers' max_grad_value= against torch's idiom (unscale_, clip_grad_value_,
then clip_grad_norm_ of the clamped grads, then step)."""

import pytest
import torch

import fusedopt
from helpers import fp32_tol

SIZES = (7, 1000, 40001)


def _pair(dtypes=(torch.float32,) * 3, scale=3.0):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(n).to(dt)) for n, dt in zip(SIZES, dtypes)]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    for x, y in zip(a, b):
        g = (torch.randn(x.shape) * scale).to(x.dtype)
        x.grad, y.grad = g.clone(), g.clone()
    return a, b


@pytest.mark.parametrize(
    "dtypes",
    [(torch.float32,) * 3, (torch.bfloat16,) * 3, (torch.float16, torch.float32, torch.float64)],
    ids=["fp32", "bf16", "mixed"],
)
@pytest.mark.parametrize("clip_value", [0.5, 2, -1.0, float("inf")])
@pytest.mark.parametrize("foreach", [None, False, True])
def test_matches_torch(dtypes, clip_value, foreach):
    a, b = _pair(dtypes)
    a[1].grad[5], a[1].grad[6], a[2].grad[0] = float("nan"), float("inf"), -float("inf")
    b[1].grad[5], b[1].grad[6], b[2].grad[0] = float("nan"), float("inf"), -float("inf")
    assert fusedopt.clip_grad_value_(a, clip_value, foreach=foreach) is None
    assert torch.nn.utils.clip_grad_value_(b, clip_value, foreach=foreach) is None
    for x, y in zip(a, b):
        assert x.grad.dtype == y.grad.dtype
        torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0, equal_nan=True)


def test_single_tensor_and_non_contiguous_grads():
    w = torch.nn.Parameter(torch.randn(4, 6))
    w.grad = (torch.randn(6, 4) * 5).t()
    ref = w.grad.clamp(-1, 1)
    fusedopt.clip_grad_value_(w, 1.0)
    assert torch.equal(w.grad, ref)


def test_no_grads_at_all_behaves_as_torch():
    def outcome(fn):
        try:
            return fn([torch.nn.Parameter(torch.randn(3))], 1.0)
        except Exception as exc:  # noqa: BLE001 - compared below
            return type(exc), str(exc)

    assert outcome(fusedopt.clip_grad_value_) == outcome(torch.nn.utils.clip_grad_value_)


def test_clip_value_is_read_as_torch_reads_it():
    w = torch.nn.Parameter(torch.randn(3))
    w.grad = torch.randn(3)
    with pytest.raises(TypeError) as theirs:
        torch.nn.utils.clip_grad_value_([w], None)
    with pytest.raises(TypeError) as ours:
        fusedopt.clip_grad_value_([w], None)
    assert str(ours.value) == str(theirs.value)
    v = torch.nn.Parameter(w.detach().clone())
    v.grad = w.grad.clone() * 4
    w.grad *= 4
    fusedopt.clip_grad_value_([w], "0.5")  # float("0.5"), as torch does
    torch.nn.utils.clip_grad_value_([v], "0.5")
    assert torch.equal(w.grad, v.grad)


# -- max_grad_value= on the optimizers ----------------------------------------------------------

OPTS = {
    "AdamW": (fusedopt.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "Adam amsgrad maximize": (fusedopt.Adam, torch.optim.Adam, dict(lr=1e-2, amsgrad=True, maximize=True)),
    "SGD nesterov": (fusedopt.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1)),
}


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("max_norm", [None, 2.0])
def test_max_grad_value_matches_the_torch_idiom(name, max_norm):
    cls, torch_cls, kw = OPTS[name]
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(n)) for n in SIZES]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    oa = cls(a, max_grad_value=0.5, max_grad_norm=max_norm, **kw)
    ob = torch_cls(b, **kw)
    for _ in range(4):
        for x, y in zip(a, b):
            g = torch.randn(x.shape) * 2
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        torch.nn.utils.clip_grad_value_(b, 0.5)
        if max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(b, max_norm)
            torch.testing.assert_close(oa.last_grad_norm, norm, rtol=1e-5, atol=0)
        ob.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_max_grad_value_of_low_precision_grads_is_clip_grad_value_first(name, dtype):
    """Half-precision grads are clamped as loaded: bit for bit what clamping them
    first (exact in their dtype) and stepping gives."""
    cls, _, kw = OPTS[name]
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(n).to(dtype)) for n in SIZES]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    oa, ob = cls(a, max_grad_value=0.5, **kw), cls(b, **kw)
    for _ in range(3):
        for x, y in zip(a, b):
            g = (torch.randn(x.shape) * 2).to(dtype)
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        fusedopt.clip_grad_value_(b, 0.5)
        ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach())


@pytest.mark.parametrize("fused_loop", [True, False], ids=["fusedopt scaler step", "torch idiom"])
def test_amp_with_value_and_norm_clipping_matches_torch(fused_loop):
    """The order is torch's idiom: unscale, find infs in the unclamped grads,
    clamp, norm of the clamped grads, update. An inf grad must skip the step even
    though clamping would make it finite."""
    results = []
    for ours in (True, False):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n)) for n in SIZES]
        if ours:
            opt = fusedopt.AdamW(params, lr=1e-2, max_grad_value=0.5, max_grad_norm=3.0) if fused_loop else fusedopt.AdamW(params, lr=1e-2)
            scaler = fusedopt.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
        else:
            opt = torch.optim.AdamW(params, lr=1e-2)
            scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
        gen = torch.Generator().manual_seed(1)
        for s in range(8):
            opt.zero_grad()
            g = [torch.randn(n, generator=gen) * 3 for n in SIZES]
            if s in (2, 5):
                g[1][3] = float("inf")
            scaler.scale(sum((p * x).sum() for p, x in zip(params, g))).backward()
            if not (ours and fused_loop):
                scaler.unscale_(opt)
                clip_value = fusedopt.clip_grad_value_ if ours else torch.nn.utils.clip_grad_value_
                clip_norm = fusedopt.clip_grad_norm_ if ours else torch.nn.utils.clip_grad_norm_
                clip_value(params, 0.5)
                clip_norm(params, 3.0)
            scaler.step(opt)
            scaler.update()
        results.append((params, scaler.get_scale(), float(opt.state[params[0]]["step"])))
    (pa, sa, stepa), (pb, sb, stepb) = results
    assert sa == sb and stepa == stepb == 6
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())


@pytest.mark.parametrize(
    "value,exc",
    [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (float("nan"), ValueError), ("1", TypeError)],
)
def test_max_grad_value_is_checked(value, exc):
    with pytest.raises(exc, match="max_grad_value"):
        fusedopt.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.1, max_grad_value=value)


def test_max_grad_value_survives_a_checkpoint_and_a_copy():
    import copy

    opt = fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))], max_grad_value=0.25)
    assert copy.deepcopy(opt).max_grad_value == 0.25
    opt.load_state_dict(torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))]).state_dict())
    assert opt.max_grad_value == 0.25
    assert "max_grad_value" not in opt.state_dict()["param_groups"][0]
