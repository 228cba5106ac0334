"""fusedopt.Adam/AdamW against torch.optim on the CPU, flag by flag."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fusedopt
from helpers import assert_params_close, assert_states_close, fp32_tol, run_side_by_side

# odd sizes exercise the vector tails; 70001 spans several threads' shares
SHAPES = [(1,), (3,), (17,), (5, 33), (1000,), (70001,)]

CLASSES = {
    "Adam": (fusedopt.Adam, torch.optim.Adam, {}),
    "AdamW": (fusedopt.AdamW, torch.optim.AdamW, {}),
    "Adam-decoupled": (fusedopt.Adam, torch.optim.Adam, {"decoupled_weight_decay": True}),
}


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize(
    "amsgrad,maximize,weight_decay,tensor_lr",
    list(itertools.product([False, True], [False, True], [0.0, 0.1], [False, True])),
)
def test_matches_torch_fp32(name, amsgrad, maximize, weight_decay, tensor_lr):
    fused_cls, torch_cls, extra = CLASSES[name]
    lr = torch.tensor(0.01) if tensor_lr else 0.01
    kwargs = dict(lr=lr, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, **extra)
    pa, pb, oa, ob = run_side_by_side(
        fused_cls, torch_cls, SHAPES, kwargs, steps=6, torch_extra={"foreach": False}
    )
    assert_params_close(pa, pb, **fp32_tol())
    assert_states_close(oa, ob, pa, pb, **fp32_tol())


def test_adam_and_adamw_differ():
    """Guards the comparison itself: coupled and decoupled decay must not agree."""
    kwargs = dict(lr=0.01, weight_decay=0.1)
    pa, _, _, _ = run_side_by_side(fusedopt.Adam, torch.optim.Adam, SHAPES, kwargs)
    pb, _, _, _ = run_side_by_side(fusedopt.AdamW, torch.optim.AdamW, SHAPES, kwargs)
    assert any(not torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(pa, pb))


def test_param_groups_with_their_own_hyperparameters():
    groups = [
        dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.0),
        dict(lr=0.001, eps=1e-6, weight_decay=0.3, amsgrad=True),
        dict(lr=0.05, maximize=True),
    ]
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.AdamW, torch.optim.AdamW, SHAPES * 2, {"lr": 0.01}, group_kwargs=groups, steps=5,
        torch_extra={"foreach": False},
    )
    assert_params_close(pa, pb, **fp32_tol())
    assert_states_close(oa, ob, pa, pb, **fp32_tol())


def test_none_grads_skip_params_and_their_steps():
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.AdamW, torch.optim.AdamW, SHAPES, {"lr": 0.01, "weight_decay": 0.1}, steps=7, none_every=3,
        torch_extra={"foreach": False},
    )
    assert_params_close(pa, pb, **fp32_tol())
    assert_states_close(oa, ob, pa, pb, **fp32_tol())
    steps = sorted({float(oa.state[p]["step"]) for p in pa})
    assert len(steps) > 1, "the None pattern should leave params at different step counts"


def _warmup(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))


def _warmup_then_cosine(opt):
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[3])


def _one_cycle(opt):
    # OneCycleLR also cycles betas[0]
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10)


@pytest.mark.parametrize("scheduler", [_warmup, _warmup_then_cosine, _one_cycle])
def test_lr_schedulers(scheduler):
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.AdamW, torch.optim.AdamW, SHAPES, {"lr": 0.01, "weight_decay": 0.1}, steps=8,
        scheduler=scheduler, torch_extra={"foreach": False},
    )
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    assert_params_close(pa, pb, **fp32_tol())


def test_reduce_lr_on_plateau():
    pa, pb, oa, ob = run_side_by_side(fusedopt.Adam, torch.optim.Adam, SHAPES, {"lr": 0.01}, steps=1)
    sa = torch.optim.lr_scheduler.ReduceLROnPlateau(oa, patience=0, factor=0.5)
    sb = torch.optim.lr_scheduler.ReduceLROnPlateau(ob, patience=0, factor=0.5)
    for step in range(4):
        for p, q in zip(pa, pb):
            g = torch.randn_like(p)
            p.grad, q.grad = g, g.clone()
        oa.step()
        ob.step()
        sa.step(1.0)
        sb.step(1.0)
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"] < 0.01
    assert_params_close(pa, pb, **fp32_tol())


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    lr=st.floats(1e-4, 0.1),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.5, 0.9999),
    eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.1]),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    decoupled=st.booleans(),
)
def test_random_shapes_and_hyperparameters(sizes, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled):
    kwargs = dict(
        lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
        decoupled_weight_decay=decoupled,
    )
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.Adam, torch.optim.Adam, [(n,) for n in sizes], kwargs, steps=3, torch_extra={"foreach": False}
    )
    assert_params_close(pa, pb, **fp32_tol())
    assert_states_close(oa, ob, pa, pb, **fp32_tol())


def test_float64_and_complex_params_take_the_reference_path():
    for dtype in (torch.float64, torch.complex64):
        pa, pb, oa, ob = run_side_by_side(
            fusedopt.AdamW, torch.optim.AdamW, [(7,), (40,)], {"lr": 0.01}, dtype=dtype, steps=3,
            torch_extra={"foreach": False},
        )
        assert_params_close(pa, pb, rtol=0, atol=0)


def test_non_contiguous_params_give_torchs_result():
    base = torch.randn(40, 30)
    pa = torch.nn.Parameter(base.clone().t())  # transposed view: not contiguous
    pb = torch.nn.Parameter(base.clone().t())
    assert not pa.is_contiguous()
    oa, ob = fusedopt.AdamW([pa], lr=0.01), torch.optim.AdamW([pb], lr=0.01, foreach=False)
    for _ in range(3):
        g = torch.randn(30, 40)
        pa.grad, pb.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(pa.detach(), pb.detach(), rtol=0, atol=0)


def test_closure_is_called_and_its_loss_returned():
    p = torch.nn.Parameter(torch.randn(5))
    opt = fusedopt.Adam([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.item() > 0
    assert float(opt.state[p]["step"]) == 1.0


def test_zero_grad_and_add_param_group():
    p1, p2 = torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(20))
    q1, q2 = torch.nn.Parameter(p1.detach().clone()), torch.nn.Parameter(p2.detach().clone())
    oa, ob = fusedopt.Adam([p1], lr=0.01), torch.optim.Adam([q1], lr=0.01, foreach=False)
    for step in range(4):
        if step == 2:
            oa.add_param_group({"params": [p2], "lr": 0.05, "amsgrad": True})
            ob.add_param_group({"params": [q2], "lr": 0.05, "amsgrad": True})
        for a, b in ((p1, q1), (p2, q2)):
            g = torch.randn_like(a)
            a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        oa.zero_grad()
        ob.zero_grad()
        assert p1.grad is None
    assert_params_close([p1, p2], [q1, q2], **fp32_tol())
    assert sorted(oa.param_groups[1]) == sorted(ob.param_groups[1])
