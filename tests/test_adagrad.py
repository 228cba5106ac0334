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


def _embedding_steps(cls, model, steps, sparse_from, **kwargs):
    """An nn.Embedding (sparse grads from step `sparse_from` on) beside a dense
    Linear, trained as torch.optim.Adagrad trains it; the losses and the model."""
    opt = cls(model.parameters(), lr=0.1, **kwargs)
    for step in range(steps):
        model[0].sparse = step >= sparse_from
        ids = torch.tensor([[step % 7, 3, (5 * step) % 11], [2, 3, 9]])
        loss = model[1](model[0](ids)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("sparse_from", [0, 3])
@pytest.mark.parametrize("kwargs", [{}, {"lr_decay": 0.01, "maximize": True, "initial_accumulator_value": 0.2}])
def test_sparse_grads_step_as_torchs_adagrad_steps_them(sparse_from, kwargs):
    """An embedding's sparse grads (from the start, or after dense steps) go
    to torch's own Adagrad, as torch.optim.Adagrad's step does: same bits."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch.nn.Linear(4, 3))
    ours = _embedding_steps(fusedopt.Adagrad, copy.deepcopy(base), 6, sparse_from, **kwargs)
    theirs = _embedding_steps(torch.optim.Adagrad, copy.deepcopy(base), 6, sparse_from, **kwargs)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=2e-7)
    # the sparse rows themselves are torch's step, every bit
    if sparse_from == 0:
        assert torch.equal(ours[0].weight.detach(), theirs[0].weight.detach())


def test_sparse_grads_with_weight_decay_are_refused_before_anything_changes():
    """torch's Adagrad raises in the middle of its step; fusedopt before its first write."""
    p = torch.nn.Parameter(torch.randn(6))
    q = torch.nn.Parameter(torch.randn(6))
    grads = (torch.randn(6), torch.sparse_coo_tensor(torch.tensor([[1, 4]]), torch.ones(2), (6,)))
    tp, tq = (torch.nn.Parameter(t.detach().clone()) for t in (p, q))
    for params in ((p, q), (tp, tq)):
        for t, g in zip(params, grads):
            t.grad = g.clone()
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        torch.optim.Adagrad([tp, tq], weight_decay=0.1).step()
    opt = fusedopt.Adagrad([p, q], weight_decay=0.1)
    before = [p.detach().clone(), q.detach().clone()]
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        opt.step()
    assert torch.equal(p.detach(), before[0]) and torch.equal(q.detach(), before[1])
    assert float(opt.state[p]["step"]) == 0


def test_weight_decay_switched_on_later_refuses_sparse_grads_as_torch_does():
    """The route refuses sparse grads with weight decay; a decay set on the
    group after steps without it must be refused too, not silently dropped."""
    results = {}
    for cls in (fusedopt.Adagrad, torch.optim.Adagrad):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(6, 3, sparse=True)
        opt = cls(emb.parameters(), lr=0.1)
        emb(torch.tensor([1, 4])).sum().backward()
        opt.step()
        opt.param_groups[0]["weight_decay"] = 0.5
        before = emb.weight.detach().clone()
        with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
            opt.step()
        assert torch.equal(emb.weight.detach(), before)
        results[cls] = before
    assert torch.equal(*results.values())


def test_every_groups_sums_start_from_the_optimizers_initial_value():
    """torch fills every param's sum from the constructor's
    initial_accumulator_value, whatever a group says."""
    pa = make_params([(5,), (4,)])
    pb = clone_params(pa)
    ours = fusedopt.Adagrad([{"params": [pa[0]], "initial_accumulator_value": 0.5}], initial_accumulator_value=1.0)
    theirs = torch.optim.Adagrad([{"params": [pb[0]], "initial_accumulator_value": 0.5}], initial_accumulator_value=1.0)
    for a, b in zip(pa[:1], pb[:1]):
        assert torch.equal(ours.state[a]["sum"], theirs.state[b]["sum"])
    _run_steps = [(ours, pa[:1]), (theirs, pb[:1])]
    for opt, params in _run_steps:
        set_grads(params, make_grads(params, 0))
        opt.step()
    assert torch.equal(pa[0].detach(), pb[0].detach())


def test_a_step_count_of_minus_one_steps_as_torchs():
    """Adam's bias correction divides by zero after a step of -1; Adagrad's does not."""
    pa = make_params([(8,)])
    pb = clone_params(pa)
    ours, theirs = fusedopt.Adagrad(pa, lr=0.1), torch.optim.Adagrad(pb, lr=0.1)
    ours.state[pa[0]]["step"].fill_(-1)
    theirs.state[pb[0]]["step"].fill_(-1)
    grads = make_grads(pa, 0)
    set_grads(pa, grads)
    set_grads(pb, grads)
    ours.step()
    theirs.step()
    torch.testing.assert_close(pa[0].detach(), pb[0].detach(), rtol=2e-6, atol=2e-7)
    assert float(ours.state[pa[0]]["step"]) == float(theirs.state[pb[0]]["step"]) == 0


def test_a_float16_sum_is_refused():
    with pytest.raises(ValueError, match="state_dtype=torch.float16 is refused for Adagrad"):
        fusedopt.Adagrad(make_params([(3,)]), state_dtype=torch.float16)
