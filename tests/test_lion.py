"""fusedopt.Lion against lion-pytorch, the package whose arguments and
semantics it takes: the same params and states after several steps (bit for
bit on the CPU kernels and the plain-torch fallback alike: the same ops with
the same roundings), and state_dicts that load there and back."""

from __future__ import annotations

import copy

import pytest
import torch

import fusedopt
from helpers import clone_params, make_grads, make_params, set_grads

lion_pytorch = pytest.importorskip("lion_pytorch", reason="lion-pytorch is the oracle (the [test] extra installs it)")

SHAPES = [(7, 5), (33,), (), (1000,), (3, 4, 5)]


def _step_both(ours, theirs, pa, pb, steps, seed=0, start=0):
    for step in range(start, start + steps):
        grads = make_grads(pa, step, seed=seed)
        set_grads(pa, grads)
        set_grads(pb, grads)
        ours.step()
        theirs.step()


def _assert_same(pa, pb, oa, ob):
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach(), b.detach())
    for a, b in zip(pa, pb):
        assert torch.equal(oa.state[a]["exp_avg"], ob.state[b]["exp_avg"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lr": 3e-4, "betas": (0.95, 0.98), "weight_decay": 0.1},
        {"lr": 1e-3, "weight_decay": 0.5, "decoupled_weight_decay": True},
        {"lr": 2e-3, "betas": (0.0, 1.0)},
    ],
)
def test_lion_matches_lion_pytorch_bit_for_bit(kwargs):
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    ours, theirs = fusedopt.Lion(pa, **kwargs), lion_pytorch.Lion(pb, **kwargs)
    _step_both(ours, theirs, pa, pb, 5)
    _assert_same(pa, pb, ours, theirs)


def test_lion_param_groups_and_none_grads_match():
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    groups = lambda ps: [{"params": ps[:2], "lr": 1e-3}, {"params": ps[2:], "weight_decay": 0.2}]  # noqa: E731
    ours, theirs = fusedopt.Lion(groups(pa), lr=1e-4), lion_pytorch.Lion(groups(pb), lr=1e-4)
    for step in range(4):
        grads = make_grads(pa, step, none_every=3)
        set_grads(pa, grads)
        set_grads(pb, grads)
        ours.step()
        theirs.step()
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach(), b.detach())
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


def test_lion_state_dict_loads_into_lion_pytorch_and_back():
    pa = make_params(SHAPES)
    pb = clone_params(pa)
    ours = fusedopt.Lion(pa, lr=1e-3, weight_decay=0.1)
    ref = lion_pytorch.Lion(pb, lr=1e-3, weight_decay=0.1)
    _step_both(ours, ref, pa, pb, 3)
    # ours -> theirs: a fresh lion-pytorch optimizer continues where ours stopped
    pc = clone_params(pa)
    theirs = lion_pytorch.Lion(pc, lr=1e-3, weight_decay=0.1)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    # theirs -> ours: a fresh fusedopt.Lion continues where lion-pytorch stopped
    pd = clone_params(pb)
    back = fusedopt.Lion(pd, lr=1e-3, weight_decay=0.1)
    back.load_state_dict(copy.deepcopy(ref.state_dict()))
    for step in range(3, 6):
        grads = make_grads(pa, step)
        for ps in (pa, pb, pc, pd):
            set_grads(ps, grads)
        for opt in (ours, ref, theirs, back):
            opt.step()
    for a, b, c, d in zip(pa, pb, pc, pd):
        assert torch.equal(a.detach(), b.detach())
        assert torch.equal(a.detach(), c.detach())
        assert torch.equal(a.detach(), d.detach())


def test_lion_refuses_what_lion_pytorch_refuses():
    p = make_params([(3,)])
    for kwargs in ({"lr": 0.0}, {"lr": -1.0}, {"betas": (1.5, 0.9)}, {"betas": (0.9, -0.1)}):
        with pytest.raises(AssertionError):
            lion_pytorch.Lion(p, **kwargs)
        with pytest.raises(AssertionError):
            fusedopt.Lion(p, **kwargs)


@pytest.mark.parametrize("sparse_from", [0, 2])
def test_sparse_grads_step_as_lion_pytorch_steps_them(sparse_from):
    """An nn.Embedding(sparse=True) beside a dense Linear: lion-pytorch adds the
    sparse grads to its dense moments (every element moves); fusedopt.Lion
    steps them as dense grads, from the start or after dense steps."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch.nn.Linear(4, 3))
    models = [copy.deepcopy(base), copy.deepcopy(base)]
    opts = [fusedopt.Lion(models[0].parameters(), lr=0.01, weight_decay=0.1),
            lion_pytorch.Lion(models[1].parameters(), lr=0.01, weight_decay=0.1)]
    for step in range(5):
        ids = torch.tensor([[step % 7, 3, (5 * step) % 11], [2, 3, 9]])
        for model, opt in zip(models, opts):
            model[0].sparse = step >= sparse_from
            opt.zero_grad()
            model[1](model[0](ids)).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        # (a sparse add leaves an exp_avg's -0.0 where a dense one makes +0.0: equal values)
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
