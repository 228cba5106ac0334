"""The single-process side of distributed support: the norm_group keyword,
step_backends(), and that neither changes what torch sees."""

import copy
import pickle

import pytest
import torch

import fusedopt
from conftest import NATIVE_CPU


def _params():
    ps = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 2))]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.AdamW, fusedopt.SGD])
@pytest.mark.parametrize("bad", ["global", 3, ["world"]])
def test_bad_norm_group_is_refused(cls, bad):
    with pytest.raises(TypeError, match="norm_group must be None, 'local', 'world' or a torch.distributed.ProcessGroup"):
        cls(_params(), lr=0.1, norm_group=bad)


def test_world_norm_group_needs_an_initialized_job_and_changes_nothing_before():
    ps = _params()
    before = [p.detach().clone() for p in ps]
    opt = fusedopt.AdamW(ps, max_grad_norm=1.0, norm_group="world")
    with pytest.raises(RuntimeError, match="norm_group='world' needs torch.distributed to be initialized"):
        opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, ps)) and not opt.state


def test_local_norm_group_is_the_plain_step_and_stays_out_of_the_state_dict():
    a, b = _params(), None
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for x, y in zip(a, b):
        y.grad = x.grad.clone()
    oa = fusedopt.AdamW(a, max_grad_norm=0.5, norm_group="local")
    ob = fusedopt.AdamW(b, max_grad_norm=0.5)
    oa.step()
    ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert oa.state_dict()["param_groups"] == ob.state_dict()["param_groups"]
    # fusedopt's own options survive copies, as max_grad_norm does
    assert copy.deepcopy(oa).norm_group == "local" and pickle.loads(pickle.dumps(oa)).norm_group == "local"


def test_step_backends_counts_the_params_of_the_last_step():
    ps = _params() + [torch.nn.Parameter(torch.randn(4, dtype=torch.float64))]
    ps[-1].grad = torch.randn(4, dtype=torch.float64)
    opt = fusedopt.SGD(ps, lr=0.1, momentum=0.9)
    assert opt.step_backends() == {}
    opt.step()
    expected = {"cpu-native": 2, "reference": 1} if NATIVE_CPU else {"reference": 3}
    assert opt.step_backends() == expected
