"""The cached buckets (fusedopt/optim/_bucket_cache.py) must never update stale
tensors: every change a user can make between steps either keeps torch's
result or rebuilds the buckets, and a refused step changes nothing."""

import copy
import pickle

import pytest
import torch

import fusedopt
from helpers import fp32_tol


def _pair(cls, torch_cls, shapes, **kw):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    return a, b, cls(a, **kw), torch_cls(b, **kw)


def _step(a, b, oa, ob, grads=None):
    for i, (x, y) in enumerate(zip(a, b)):
        g = torch.randn_like(x) if grads is None else grads[i]
        x.grad, y.grad = (None, None) if g is None else (g.clone(), g.clone())
    oa.step()
    ob.step()


@pytest.mark.parametrize("reset", ["clear", "new dict", "del param", "empty dict"])
@pytest.mark.parametrize("cls,torch_cls,kw", [
    (fusedopt.Adam, torch.optim.Adam, dict(lr=0.1)),
    (fusedopt.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3)),
])
def test_state_reset_between_steps_starts_fresh_like_torch(reset, cls, torch_cls, kw):
    from collections import defaultdict

    a, b, oa, ob = _pair(cls, torch_cls, [(8,), (300,)], **kw)
    _step(a, b, oa, ob)
    for opt, p in ((oa, a[0]), (ob, b[0])):
        if reset == "clear":
            opt.state.clear()
        elif reset == "new dict":
            opt.state = defaultdict(dict)
        elif reset == "del param":
            del opt.state[p]
        else:
            opt.state[p] = {}
    for _ in range(2):
        _step(a, b, oa, ob)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())
    assert oa.state_dict()["state"].keys() == ob.state_dict()["state"].keys()


def test_deleted_momentum_buffer_restarts_like_torch():
    a, b, oa, ob = _pair(fusedopt.SGD, torch.optim.SGD, [(8,)], lr=0.1, momentum=0.9, dampening=0.5)
    _step(a, b, oa, ob)
    del oa.state[a[0]]["momentum_buffer"]
    del ob.state[b[0]]["momentum_buffer"]
    _step(a, b, oa, ob)
    torch.testing.assert_close(a[0].detach(), b[0].detach(), **fp32_tol())


def test_replaced_state_tensor_is_used():
    a, b, oa, ob = _pair(fusedopt.AdamW, torch.optim.AdamW, [(16,)], lr=0.1)
    _step(a, b, oa, ob)
    oa.state[a[0]]["exp_avg"] = torch.full((16,), 0.5)
    ob.state[b[0]]["exp_avg"] = torch.full((16,), 0.5)
    _step(a, b, oa, ob)
    torch.testing.assert_close(a[0].detach(), b[0].detach(), **fp32_tol())


@pytest.mark.parametrize("change", ["transpose storage", "to float64"])
def test_param_data_replaced_between_steps(change):
    torch.manual_seed(0)
    small = torch.nn.Parameter(torch.zeros(4))
    w = torch.nn.Parameter(torch.randn(4, 4))
    opt = fusedopt.SGD([{"params": [small]}, {"params": [w]}], lr=0.1)
    small.grad, w.grad = torch.ones(4), torch.ones(4, 4)
    opt.step()
    if change == "transpose storage":
        w.data = w.data.t().contiguous().t()
    else:
        w.data = w.data.double()
        w.grad = w.grad.double()
    ref = w.detach().clone() - 0.1 * w.grad
    opt.step()
    torch.testing.assert_close(w.detach(), ref, rtol=0, atol=1e-7)
    assert torch.equal(small.detach(), torch.full((4,), -0.2))


def test_master_weights_with_fallback_params_of_both_kinds():
    a = torch.nn.Parameter(torch.randn(4, 3, 2, 2).transpose(0, 1))  # fp32, a layout the kernels skip
    b = torch.nn.Parameter(torch.randn(4, 3, 2, 2).bfloat16().transpose(0, 1))  # bf16 with a master, likewise
    a0, b0 = a.detach().clone(), b.detach().float().clone()
    opt = fusedopt.SGD([a, b], lr=0.1, master_weights=True)
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    opt.step()
    torch.testing.assert_close(a.detach(), a0 - 0.1, rtol=0, atol=1e-6)
    torch.testing.assert_close(opt.state[b]["master_param"], b0 - 0.1, rtol=0, atol=1e-6)
    assert "master_param" not in opt.state.get(a, {})


@pytest.mark.parametrize("cls,torch_cls,kw", [
    (fusedopt.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
])
def test_channels_last_params_run_natively_and_match_torch(cls, torch_cls, kw):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(8, 3, 5, 5).to(memory_format=torch.channels_last)),
         torch.nn.Parameter(torch.randn(2, 4, 3, 3, 3).to(memory_format=torch.channels_last_3d))]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    oa, ob = cls(a, **kw), torch_cls(b, foreach=False, **kw)
    for _ in range(3):
        for x, y in zip(a, b):
            g = torch.randn_like(x)  # keeps the layout
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert x.is_contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())
    buckets = oa._bucket_group(oa.param_groups[0])
    assert all(bk.native for bk in buckets.values())  # the device's kernels take this layout


def test_deepcopy_keeps_an_unapplied_sgd_buffer_unapplied():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = fusedopt.SGD([p], lr=1.0, momentum=0.9, dampening=0.5)
    p.grad = torch.ones(4)
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.ones(1)  # a skipped AMP step
    opt.step()
    del opt.grad_scale, opt.found_inf
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        q = other.param_groups[0]["params"][0]
        q.grad = torch.ones(4)
        other.step()
        assert torch.equal(q.detach(), torch.full((4,), -1.0))  # buf = g, undampened


def test_load_state_dict_hooks_see_and_change_the_whole_state():
    a, b, oa, ob = _pair(fusedopt.AdamW, torch.optim.AdamW, [(6,)], lr=0.1)
    _step(a, b, oa, ob)
    sd = oa.state_dict()

    def zero_exp_avg(opt, state_dict):
        st = dict(state_dict["state"][0], exp_avg=state_dict["state"][0]["exp_avg"] * 0)
        return {**state_dict, "state": {0: st}}

    seen = {}
    for opt in (oa, ob):
        opt.register_load_state_dict_pre_hook(zero_exp_avg)
        opt.register_load_state_dict_post_hook(lambda o: seen.setdefault(type(o).__module__, sorted(o.state[o.param_groups[0]["params"][0]])))
        opt.load_state_dict(sd)
    assert torch.equal(oa.state[a[0]]["exp_avg"], torch.zeros(6))
    assert torch.equal(ob.state[b[0]]["exp_avg"], torch.zeros(6))
    assert len(set(map(tuple, seen.values()))) == 1  # post-hooks see the same keys as torch's


def test_tensor_lr_of_other_dtypes():
    a, b, oa, ob = _pair(fusedopt.AdamW, torch.optim.AdamW, [(9,)], lr=torch.tensor(0.1, dtype=torch.float64))
    _step(a, b, oa, ob)
    torch.testing.assert_close(a[0].detach(), b[0].detach(), **fp32_tol())
    # a bf16 (or integer) lr is read as its value: the same step as that value given in float32
    # (torch computes its step size in the lr's own dtype, rounding it to bf16)
    lr = torch.tensor(0.1, dtype=torch.bfloat16)
    a, b, oa, ob = _pair(fusedopt.AdamW, fusedopt.AdamW, [(9,)], lr=lr)
    ob.param_groups[0]["lr"] = torch.tensor(float(lr))
    _step(a, b, oa, ob)
    assert torch.equal(a[0].detach(), b[0].detach())
