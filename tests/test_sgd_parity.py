"""fusedopt.SGD against torch.optim.SGD on the CPU, flag by flag."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fusedopt
from helpers import assert_params_close, assert_states_close, fp32_tol, run_side_by_side

SHAPES = [(1,), (3,), (17,), (5, 33), (1000,), (70001,)]

CASES = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 0.1], [False, True])
    if not (n and (m == 0 or d != 0))  # torch refuses nesterov without momentum or with dampening
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_matches_torch_fp32(case, tensor_lr):
    lr = torch.tensor(0.01) if tensor_lr else 0.01
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.SGD, torch.optim.SGD, SHAPES, dict(lr=lr, **case), steps=6, torch_extra={"foreach": False}
    )
    assert_params_close(pa, pb, **fp32_tol())
    assert_states_close(oa, ob, pa, pb, **fp32_tol())


def test_first_step_starts_the_buffer_from_the_gradient():
    """torch: buf = grad on the first step (no dampening), buf = m*buf + (1-d)*g after."""
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.SGD, torch.optim.SGD, [(64,)], dict(lr=0.1, momentum=0.9, dampening=0.5), steps=1,
        torch_extra={"foreach": False},
    )
    torch.testing.assert_close(oa.state[pa[0]]["momentum_buffer"], ob.state[pb[0]]["momentum_buffer"], rtol=0, atol=0)


def test_none_grads_and_groups():
    groups = [dict(lr=0.05, momentum=0.9), dict(lr=0.01, momentum=0.0, weight_decay=0.2), dict(nesterov=True, momentum=0.5)]
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.SGD, torch.optim.SGD, SHAPES * 2, {"lr": 0.01}, group_kwargs=groups, steps=6, none_every=4,
        torch_extra={"foreach": False},
    )
    assert_params_close(pa, pb, **fp32_tol())
    assert_states_close(oa, ob, pa, pb, **fp32_tol())


def test_momentum_free_sgd_keeps_no_state():
    pa, pb, oa, ob = run_side_by_side(fusedopt.SGD, torch.optim.SGD, SHAPES, {"lr": 0.1}, steps=2)
    assert oa.state_dict()["state"] == ob.state_dict()["state"] == {}


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    lr=st.floats(1e-4, 0.5),
    momentum=st.floats(0.0, 0.99),
    dampening=st.floats(0.0, 0.9),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.1]),
    maximize=st.booleans(),
)
def test_random_shapes_and_hyperparameters(sizes, lr, momentum, dampening, weight_decay, maximize):
    kwargs = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, maximize=maximize)
    pa, pb, oa, ob = run_side_by_side(
        fusedopt.SGD, torch.optim.SGD, [(n,) for n in sizes], kwargs, steps=3, torch_extra={"foreach": False}
    )
    assert_params_close(pa, pb, **fp32_tol())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sparse_grads_are_handled_as_torch_does(momentum):
    pa = torch.nn.Parameter(torch.randn(10, 4))
    pb = torch.nn.Parameter(pa.detach().clone())
    oa = fusedopt.SGD([pa], lr=0.1, momentum=momentum)
    ob = torch.optim.SGD([pb], lr=0.1, momentum=momentum)
    for step in range(3):
        idx = torch.tensor([[step, 3, 7]])
        g = torch.sparse_coo_tensor(idx, torch.randn(3, 4), (10, 4))
        pa.grad, pb.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(pa.detach(), pb.detach(), rtol=0, atol=0)
