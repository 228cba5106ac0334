"""differentiable=True: the step is part of the autograd graph (meta-learning,
a learned lr), as with torch.optim; fusedopt runs torch's own differentiable
implementation for it, so values and gradients are torch's."""

import pytest
import torch

import fusedopt

CONFIGS = {
    "Adam": (fusedopt.Adam, torch.optim.Adam, dict(weight_decay=0.1)),
    # torch's own differentiable amsgrad fails on its second step's backward
    # ("modified by an inplace operation"): fusedopt must fail the same way
    "Adam amsgrad": (fusedopt.Adam, torch.optim.Adam, dict(amsgrad=True, maximize=True)),
    "AdamW": (fusedopt.AdamW, torch.optim.AdamW, dict(weight_decay=0.1)),
    "SGD": (fusedopt.SGD, torch.optim.SGD, dict(momentum=0.9, nesterov=True, weight_decay=0.1)),
}


def _unrolled(cls, kw, steps=3):
    """A few differentiable steps on a non-leaf copy of w, then a meta-loss of
    the result; returns the final params and d(meta-loss)/d(lr), d/d(w0)."""
    torch.manual_seed(0)
    w0 = torch.randn(5, 4, requires_grad=True)
    lr = torch.tensor(0.05, requires_grad=True)
    x = torch.randn(8, 5)
    w = w0.clone()
    opt = cls([w], lr=lr, differentiable=True, **kw)
    for _ in range(steps):
        loss = (x @ w).tanh().square().sum()
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        w.grad = g
        opt.step()
    meta = (x @ w).sum()
    glr, gw0 = torch.autograd.grad(meta, (lr, w0))
    return w.detach(), glr, gw0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_flow_through_the_step_as_in_torch(name):
    cls, torch_cls, kw = CONFIGS[name]

    def outcome(c):
        try:
            return _unrolled(c, kw), None
        except RuntimeError as exc:
            return None, str(exc)

    (ours, our_error), (theirs, their_error) = outcome(cls), outcome(torch_cls)
    assert our_error == their_error
    if their_error is not None:
        return
    (w, glr, gw0), (tw, tglr, tgw0) = ours, theirs
    assert glr.abs() > 0
    torch.testing.assert_close(w, tw, rtol=0, atol=0)
    torch.testing.assert_close(glr, tglr, rtol=0, atol=0)
    torch.testing.assert_close(gw0, tgw0, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_is_torchs(name):
    cls, torch_cls, kw = CONFIGS[name]
    results = []
    for c in (cls, torch_cls):
        torch.manual_seed(0)
        w = torch.randn(6, requires_grad=True).clone()
        opt = c([w], lr=0.1, differentiable=True, **kw)
        w.grad = torch.randn(6)
        opt.step()
        results.append(opt.state_dict())
    ours, theirs = results
    assert ours["param_groups"] == theirs["param_groups"]
    for k, v in theirs["state"][0].items():
        torch.testing.assert_close(ours["state"][0][k].detach(), v.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("option", [dict(max_grad_norm=1.0), dict(max_grad_value=1.0), dict(master_weights=True)])
def test_fusedopt_kernel_options_are_refused_with_differentiable(name, option):
    cls = CONFIGS[name][0]
    with pytest.raises(ValueError, match="differentiable=True"):
        cls([torch.nn.Parameter(torch.randn(3))], differentiable=True, **option)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_with_differentiable_is_refused_like_torch(name):
    cls, torch_cls, _ = CONFIGS[name]
    msgs = []
    for c in (cls, torch_cls):
        with pytest.raises(RuntimeError) as info:
            c([torch.nn.Parameter(torch.randn(3))], fused=True, differentiable=True)
        msgs.append(str(info.value))
    assert msgs[0] == msgs[1]


@pytest.mark.parametrize("scaler_cls", [fusedopt.GradScaler, torch.amp.GradScaler])
def test_a_grad_scaler_drives_a_differentiable_step_as_torch_does(scaler_cls):
    results = []
    for cls, sc in ((fusedopt.AdamW, scaler_cls), (torch.optim.AdamW, torch.amp.GradScaler)):
        torch.manual_seed(0)
        w = torch.randn(6, requires_grad=True).clone()
        w.retain_grad()
        opt = cls([w], lr=0.1, differentiable=True)
        scaler = sc("cpu", init_scale=8.0)
        for s in range(3):
            w.grad = None
            g = torch.randn(6)
            if s == 1:
                g[2] = float("inf")
            scaler.scale((w * g).sum()).backward(retain_graph=True)
            scaler.step(opt)
            scaler.update()
        results.append((w.detach().clone(), scaler.get_scale()))
    (a, sa), (b, sb) = results
    assert sa == sb
    torch.testing.assert_close(a, b, rtol=0, atol=0)
