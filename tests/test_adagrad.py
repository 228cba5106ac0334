"""fusedopt.Adagrad against torch.optim.Adagrad beyond torch's own test
database (tests/test_torch_optim_db.py drives every configuration of it): the
native kernels within an ulp or two of torch's default path (torch's CPU sqrt
is MKL's, not correctly rounded), the plain-torch fallback bit for bit, the
state made with the optimizer as torch makes it, checkpoints both ways."""

from __future__ import annotations

import copy

import pytest
import torch

import fusedopt
from fusedopt._reference_adagrad import adagrad_
from helpers import clone_params, make_grads, make_params, set_grads

SHAPES = [(7, 5), (33,), (), (1000,), (3, 4, 5)]
KWARGS = [
    {},
    {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.3, "eps": 1e-6},
    {"lr": 0.02, "maximize": True, "weight_decay": 0.05},
    {"lr": torch.tensor(0.03), "lr_decay": 0.1},
]


def _run(cls, params, kwargs, steps=5):
    opt = cls(params, **copy.deepcopy(kwargs))
    for step in range(steps):
        set_grads(params, make_grads(params, step))
        opt.step()
    return opt


@pytest.mark.parametrize("kwargs", KWARGS)
def test_adagrad_matches_torch(kwargs):
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    oa, ob = _run(fusedopt.Adagrad, pa, kwargs), _run(torch.optim.Adagrad, pb, kwargs)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=2e-7)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(oa.state[a]["sum"], ob.state[b]["sum"], rtol=1e-6, atol=0)
        assert float(oa.state[a]["step"]) == float(ob.state[b]["step"]) == 5


@pytest.mark.parametrize("kwargs", KWARGS[:3])
def test_the_fallback_is_torchs_default_path_bit_for_bit(kwargs):
    # the reference update, called as the list op would be: torch's ops, torch's bits
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    ob = _run(torch.optim.Adagrad, pb, {**kwargs, "foreach": False})
    lr, decay = kwargs.get("lr", 0.01), kwargs.get("lr_decay", 0.0)
    wd, eps, init = kwargs.get("weight_decay", 0.0), kwargs.get("eps", 1e-10), kwargs.get("initial_accumulator_value", 0)
    sums = [torch.full_like(p, init) for p in pa]
    steps = [torch.zeros(()) for _ in pa]
    with torch.no_grad():
        for step in range(5):
            grads = make_grads(pa, step)
            adagrad_(pa, grads, sums, steps, [], (decay, wd, eps), None, lr, None, None, None, None, 0.0, 0.0,
                     kwargs.get("maximize", False))
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach(), b.detach())
    for s, b in zip(sums, pb):
        assert torch.equal(s, ob.state[b]["sum"])


def test_state_is_made_with_the_optimizer_as_torchs():
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    oa = fusedopt.Adagrad(pa, initial_accumulator_value=0.25)
    ob = torch.optim.Adagrad(pb, initial_accumulator_value=0.25)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sb["state"]:
        assert torch.equal(sa["state"][k]["sum"], sb["state"][k]["sum"])
        assert float(sa["state"][k]["step"]) == float(sb["state"][k]["step"])


def test_checkpoints_load_both_ways_and_continue():
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    oa, ob = _run(fusedopt.Adagrad, pa, KWARGS[1], 3), _run(torch.optim.Adagrad, pb, KWARGS[1], 3)
    pc, pd = clone_params(pb), clone_params(pa)
    oc = fusedopt.Adagrad(pc, **KWARGS[1])
    oc.load_state_dict(copy.deepcopy(ob.state_dict()))  # torch -> fusedopt
    od = torch.optim.Adagrad(pd, **KWARGS[1])
    od.load_state_dict(copy.deepcopy(oa.state_dict()))  # fusedopt -> torch
    for step in range(3, 6):
        grads = make_grads(pa, step)
        for ps, opt in ((pa, oa), (pb, ob), (pc, oc), (pd, od)):
            set_grads(ps, grads)
            opt.step()
    for a, b, c, d in zip(pa, pb, pc, pd):
        torch.testing.assert_close(c.detach(), b.detach(), rtol=2e-6, atol=2e-7)
        torch.testing.assert_close(d.detach(), a.detach(), rtol=2e-6, atol=2e-7)


def test_sparse_grads_are_refused_before_anything_changes():
    p = torch.nn.Parameter(torch.randn(6))
    q = torch.nn.Parameter(torch.randn(6))
    opt = fusedopt.Adagrad([p, q])
    p.grad = torch.randn(6)
    q.grad = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), torch.ones(2), (6,))
    before = [p.detach().clone(), q.detach().clone()]
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    assert torch.equal(p.detach(), before[0]) and torch.equal(q.detach(), before[1])
    assert float(opt.state[p]["step"]) == 0
