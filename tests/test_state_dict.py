"""Checkpoints: save/load/continue is bitwise, and torch.optim checkpoints
interchange with fusedopt's both ways."""

import copy
import io
import pickle

import pytest
import torch

import fusedopt
from helpers import clone_params, fp32_tol, make_grads, make_params, set_grads

SHAPES = [(3,), (17,), (5, 33), (1000,)]


def _train(opt, params, base, steps, start=0):
    for s in range(start, start + steps):
        set_grads(params, make_grads(base, s, none_every=5))
        opt.step()


def _roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


CONFIGS = [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1), torch.float32),
    (fusedopt.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True), torch.float32),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1), torch.float32),
    (fusedopt.AdamW, dict(lr=0.01, master_weights=True), torch.bfloat16),
    (fusedopt.AdamW, dict(lr=0.01, state_dtype=torch.bfloat16), torch.float32),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9, master_weights=True), torch.float16),
]


@pytest.mark.parametrize("cls,kwargs,dtype", CONFIGS, ids=lambda x: getattr(x, "__name__", None))
def test_save_load_continue_is_bitwise(cls, kwargs, dtype):
    base = make_params(SHAPES, dtype=dtype)
    pa = clone_params(base)
    oa = cls(pa, **kwargs)
    _train(oa, pa, base, 4)
    saved_params = [p.detach().clone() for p in pa]
    saved = _roundtrip(oa.state_dict())
    _train(oa, pa, base, 4, start=4)

    pb = [torch.nn.Parameter(p.clone()) for p in saved_params]
    ob = cls(pb, **kwargs)
    ob.load_state_dict(saved)
    _train(ob, pb, base, 4, start=4)

    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
    for a, b in zip(pa, pb):
        sa, sb = oa.state[a], ob.state[b]
        assert set(sa) == set(sb)
        for key in sa:
            assert sa[key].dtype == sb[key].dtype, key
            assert torch.equal(sa[key], sb[key]), key


INTERCHANGE = [
    (fusedopt.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    (fusedopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
]


@pytest.mark.parametrize("ours,theirs,kwargs", INTERCHANGE, ids=lambda x: getattr(x, "__name__", None))
@pytest.mark.parametrize("direction", ["torch->fusedopt", "fusedopt->torch"])
def test_interchange_with_torch(ours, theirs, kwargs, direction):
    first, second = (theirs, ours) if direction == "torch->fusedopt" else (ours, theirs)
    base = make_params(SHAPES)
    # the run that never switches: torch throughout
    ref = clone_params(base)
    oref = theirs(ref, foreach=False, **kwargs)
    _train(oref, ref, base, 6)

    pa = clone_params(base)
    oa = first(pa, **kwargs)
    _train(oa, pa, base, 3)
    sd = _roundtrip(oa.state_dict())
    pb = [torch.nn.Parameter(p.detach().clone()) for p in pa]
    ob = second(pb, **kwargs)
    ob.load_state_dict(sd)
    _train(ob, pb, base, 3, start=3)

    for a, b in zip(pb, ref):
        torch.testing.assert_close(a.detach(), b.detach(), **fp32_tol())
    for p in pb:
        st = ob.state[p]
        assert set(st) == set(oref.state[ref[0]]) or not st
        if "step" in st:
            assert st["step"].dtype == torch.float32


@pytest.mark.parametrize("ours,theirs,kwargs", INTERCHANGE, ids=lambda x: getattr(x, "__name__", None))
def test_state_and_param_group_keys_are_torchs(ours, theirs, kwargs):
    base = make_params(SHAPES)
    pa, pb = clone_params(base), clone_params(base)
    oa, ob = ours(pa, **kwargs), theirs(pb, **kwargs)
    _train(oa, pa, base, 2)
    _train(ob, pb, base, 2)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert [sorted(g) for g in sa["param_groups"]] == [sorted(g) for g in sb["param_groups"]]
    assert sa["param_groups"] == sb["param_groups"]
    assert sorted(sa["state"]) == sorted(sb["state"])
    for k in sb["state"]:
        assert sorted(sa["state"][k]) == sorted(sb["state"][k])


def test_step_counters_are_float32_on_the_param_device():
    p = torch.nn.Parameter(torch.randn(4))
    opt = fusedopt.AdamW([p])
    p.grad = torch.randn(4)
    opt.step()
    step = opt.state[p]["step"]
    assert step.dtype == torch.float32 and step.dim() == 0 and step.device == p.device and float(step) == 1


def test_loading_a_float64_step_keeps_float32():
    """Checkpoints saved under torch.set_default_dtype(torch.float64) carry float64 steps."""
    base = make_params(SHAPES)
    pb = clone_params(base)
    ob = torch.optim.AdamW(pb, lr=0.01)
    _train(ob, pb, base, 2)
    sd = ob.state_dict()
    for st in sd["state"].values():
        st["step"] = st["step"].double()
    pa = clone_params(pb)
    oa = fusedopt.AdamW(pa, lr=0.01)
    oa.load_state_dict(sd)
    assert all(oa.state[p]["step"].dtype == torch.float32 for p in pa)
    _train(oa, pa, base, 1, start=2)


def test_sgd_buffer_not_yet_applied_is_not_saved():
    """An AMP step skipped on found_inf leaves SGD without a momentum buffer in
    torch; fusedopt's state_dict says the same."""
    p = torch.nn.Parameter(torch.randn(8))
    opt = fusedopt.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = torch.randn(8)
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.ones(1)
    before = p.detach().clone()
    opt.step()
    assert torch.equal(p.detach(), before)
    assert opt.state_dict()["state"] == {}
    opt.found_inf = torch.zeros(1)
    g = p.grad.clone()
    opt.step()
    # the first applied step starts the buffer from the gradient, undampened
    assert torch.equal(opt.state[p]["momentum_buffer"], g)
    assert "momentum_buffer" in opt.state_dict()["state"][0]


def test_copy_and_pickle_keep_fusedopt_options():
    p = torch.nn.Parameter(torch.randn(4))
    opt = fusedopt.AdamW([p], max_grad_norm=1.5, state_dtype=torch.bfloat16)
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert other.max_grad_norm == 1.5 and other.state_dtype == torch.bfloat16 and other.master_weights is False
