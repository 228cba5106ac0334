"""AMP: fusedopt.GradScaler and the optimizers' AMP protocol against torch's
unscale_ + clip_grad_norm_ + AdamW pipeline, over a scripted run with inf and
nan grads on chosen steps."""

import pytest
import torch

import fusedopt
from helpers import fp32_tol

SIZES = (5, 300, 1001)
INF_STEPS = (2, 5, 6)
NAN_STEPS = (8,)


def _scripted_run(scaler_cls, opt_cls, *, idiom, clip=1.0, steps=12, accumulate=1, opt_kwargs=None, device="cpu"):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, device=device)) for n in SIZES]
    kw = dict(lr=1e-2, weight_decay=0.1, **(opt_kwargs or {}))
    if not idiom:
        kw["max_grad_norm"] = clip
    opt = opt_cls(params, **kw)
    scaler = scaler_cls(device, init_scale=2.0**10, growth_interval=3)
    scales, norms = [], []
    gen = torch.Generator().manual_seed(1)
    for s in range(steps):
        opt.zero_grad()
        for micro in range(accumulate):
            g = [(torch.randn(n, generator=gen) * 3).to(device) for n in SIZES]
            if s in INF_STEPS and micro == 0:
                g[1][7] = float("inf")
            if s in NAN_STEPS and micro == accumulate - 1:
                g[2][3] = float("nan")
            loss = sum((p * x).sum() for p, x in zip(params, g))
            scaler.scale(loss / accumulate).backward()
        if idiom:
            scaler.unscale_(opt)
            norms.append(torch.nn.utils.clip_grad_norm_(params, clip))
            scaler.step(opt)
        else:
            scaler.step(opt)
            norms.append(opt.last_grad_norm.clone())
        scaler.update()
        scales.append(scaler.get_scale())
    return params, opt, scaler, scales, norms


def _torch_pipeline(**kw):
    return _scripted_run(torch.amp.GradScaler, torch.optim.AdamW, idiom=True, **kw)


PIPELINES = {
    "fused loop (fusedopt scaler, optimizer clips)": dict(scaler_cls=fusedopt.GradScaler, idiom=False),
    "torch idiom with fusedopt's scaler": dict(scaler_cls=fusedopt.GradScaler, idiom=True),
    "torch idiom with torch's scaler": dict(scaler_cls=torch.amp.GradScaler, idiom=True),
    "torch's scaler, optimizer clips": dict(scaler_cls=torch.amp.GradScaler, idiom=False),
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_pipeline_matches_torch(pipeline):
    ref_p, ref_o, _, ref_scales, ref_norms = _torch_pipeline()
    p, o, _, scales, norms = _scripted_run(opt_cls=fusedopt.AdamW, **PIPELINES[pipeline])
    assert scales == ref_scales  # backoff on the inf/nan steps, growth after growth_interval
    assert len(set(scales)) > 2
    for a, b in zip(p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), **fp32_tol())
    applied = 12 - len(INF_STEPS) - len(NAN_STEPS)
    for a, b in zip(p, ref_p):
        assert float(o.state[a]["step"]) == float(ref_o.state[b]["step"]) == applied
    for n, rn in zip(norms, ref_norms):
        if torch.isfinite(rn):
            torch.testing.assert_close(n.float(), rn.float(), rtol=1e-5, atol=0)
        else:
            assert not torch.isfinite(n)


def test_gradient_accumulation_matches_torch():
    ref_p, *_ = _torch_pipeline(accumulate=3)
    p, *_ = _scripted_run(fusedopt.GradScaler, fusedopt.AdamW, idiom=False, accumulate=3)
    for a, b in zip(p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), **fp32_tol())


@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(amsgrad=True, max_grad_norm=1.0)),
    (fusedopt.Adam, dict(weight_decay=0.1)),
    (fusedopt.SGD, dict(momentum=0.9, max_grad_norm=0.5)),
    (fusedopt.AdamW, dict(master_weights=True, max_grad_norm=1.0)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skipped_step_changes_nothing(cls, kwargs, dtype):
    params = [torch.nn.Parameter(torch.randn(n).to(dtype)) for n in SIZES]
    opt = cls(params, lr=0.1, **kwargs)
    scaler = fusedopt.GradScaler("cpu", init_scale=4.0)

    def backward(poison):
        opt.zero_grad()
        g = [torch.randn(n).to(dtype) for n in SIZES]
        if poison:
            g[2][0] = float("nan")
        scaler.scale(sum((p * x).sum() for p, x in zip(params, g)).float()).backward()

    backward(False)
    scaler.step(opt)
    scaler.update()
    before_p = [p.detach().clone() for p in params]
    before_s = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    backward(True)
    scaler.step(opt)
    scaler.update()
    for p, b in zip(params, before_p):
        assert torch.equal(p.detach(), b)
    for p, b in zip(params, before_s):
        st = opt.state[p]
        assert st.keys() == b.keys()
        for k in b:
            assert torch.equal(st[k], b[k]), k
    assert scaler.get_scale() == 2.0


@pytest.mark.parametrize("direction", ["torch->fusedopt", "fusedopt->torch"])
def test_scaler_state_dict_interchanges_with_torch(direction):
    src_cls, dst_cls = (torch.amp.GradScaler, fusedopt.GradScaler)
    if direction == "fusedopt->torch":
        src_cls, dst_cls = dst_cls, src_cls
    _, _, src, _, _ = _scripted_run(src_cls, fusedopt.AdamW, idiom=True, steps=7)
    sd = src.state_dict()
    dst = dst_cls("cpu")
    dst.load_state_dict(sd)
    assert dst.state_dict() == sd
    assert dst.get_scale() == src.get_scale()
    assert dst._get_growth_tracker() == src._get_growth_tracker()
    assert sd["growth_interval"] == 3


def test_scaler_api_is_torchs():
    s = fusedopt.GradScaler("cpu", init_scale=8.0, growth_factor=3.0, backoff_factor=0.25, growth_interval=5)
    assert isinstance(s, torch.amp.GradScaler)
    assert s.is_enabled()
    s.set_growth_factor(4.0)
    s.set_backoff_factor(0.5)
    s.set_growth_interval(7)
    assert (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == (4.0, 0.5, 7)
    assert s.scale(torch.tensor(2.0)).item() == 16.0
    disabled = fusedopt.GradScaler("cpu", enabled=False)
    assert not disabled.is_enabled()


def test_bf16_grads_are_unscaled():
    """torch's CUDA unscale kernel rejects bf16 grads; fusedopt's handles every float dtype."""
    p = torch.nn.Parameter(torch.randn(64, dtype=torch.bfloat16))
    opt = fusedopt.SGD([p], lr=0.1)
    scaler = fusedopt.GradScaler("cpu", init_scale=256.0)
    x = torch.randn(64, dtype=torch.bfloat16)
    scaler.scale((p * x).sum()).backward()
    scaler.unscale_(opt)
    torch.testing.assert_close(p.grad, x, rtol=0, atol=0)


def test_fp16_grads_refused_by_unscale_as_in_torch():
    p = torch.nn.Parameter(torch.randn(8, dtype=torch.float16))
    opt = fusedopt.SGD([p], lr=0.1)
    scaler = fusedopt.GradScaler("cpu")
    scaler.scale((p * 2).sum()).backward()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients."):
        scaler.unscale_(opt)


def test_step_twice_and_unscale_twice_raise_as_torch():
    p = torch.nn.Parameter(torch.randn(8))
    opt = fusedopt.AdamW([p])
    scaler = fusedopt.GradScaler("cpu")
    scaler.scale(p.sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)


def test_scaler_drives_other_optimizers_as_torch():
    ref_p, *_ = _torch_pipeline()
    p, *_ = _scripted_run(fusedopt.GradScaler, torch.optim.AdamW, idiom=True)
    for a, b in zip(p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


def test_step_hooks_run_under_the_scaler():
    p = torch.nn.Parameter(torch.randn(8))
    opt = fusedopt.AdamW([p], max_grad_norm=1.0)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    scaler = fusedopt.GradScaler("cpu")
    scaler.scale(p.sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert calls == ["post"]


def test_max_grad_norm_without_amp_matches_torch_clip():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(n)) for n in SIZES]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    oa = fusedopt.AdamW(a, lr=0.01, max_grad_norm=0.3)
    ob = torch.optim.AdamW(b, lr=0.01, foreach=False)
    for _ in range(4):
        for x, y in zip(a, b):
            g = torch.randn_like(x) * 5
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        norm = torch.nn.utils.clip_grad_norm_(b, 0.3)
        ob.step()
        torch.testing.assert_close(oa.last_grad_norm.reshape(()), norm, rtol=1e-6, atol=0)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())
    # the grads themselves are left as they were: the optimizer clips as it reads them
    assert not torch.equal(a[0].grad, b[0].grad)
