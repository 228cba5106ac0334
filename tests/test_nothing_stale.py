"""Nothing a native plan holds goes stale (issue 25, cases F1-F9 but F4, which
has tests/test_master_follow.py): whatever changes between two steps, a step
either does what torch.optim's does with the same change, or refuses it as
torch does, with nothing modified. Each case runs with native plans as they
are, and with them off (FUSEDOPT_DISABLE_PLANS, the list ops)."""

import gc
import weakref

import pytest
import torch

import fusedopt
from fusedopt import _native_plan
from helpers import fp32_tol


@pytest.fixture(params=["plans", "list ops"])
def plans(request, monkeypatch):
    monkeypatch.setattr(_native_plan, "ENABLED", _native_plan.ENABLED and request.param == "plans")
    return request.param


def _pair(cls, torch_cls, kw, shapes=((4, 6), (5,))):
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    return a, b, cls(a, **kw), torch_cls(b, **kw)


def _grads(a, b, make=torch.randn_like):
    for x, y in zip(a, b):
        g = make(x)
        x.grad, y.grad = g.clone(), g.clone()


def _step(a, b, oa, ob):
    _grads(a, b)
    oa.step()
    ob.step()


def _same(a, b, oa=None, ob=None):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())
        if oa is not None:
            sa, sb = oa.state.get(x, {}), ob.state.get(y, {})
            for k in sb:
                torch.testing.assert_close(sa[k], sb[k], **fp32_tol())


def _everything(opt):
    """Copies of every param and state tensor of `opt`, to show a refused step wrote none."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            out.append(p.detach().clone())
            out.extend(v.to_dense() if v.is_sparse else v.clone() for _, v in sorted(opt.state.get(p, {}).items()))
    return out


def _unchanged(opt, before):
    after = _everything(opt)
    assert len(after) == len(before)
    for x, y in zip(after, before):
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def _both_refuse(oa, ob, error):
    """torch's optimizer `ob` raises `error`; fusedopt's `oa` raises it too and writes nothing."""
    with pytest.raises(error):
        ob.step()
    before = _everything(oa)
    with pytest.raises(error):
        oa.step()
    _unchanged(oa, before)


ADAM = (fusedopt.AdamW, torch.optim.AdamW, dict(lr=0.1))
SGD_MOMENTUM = (fusedopt.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9))


# -- F1: a copy-on-write clone of a planned tensor ------------------------------------------


@pytest.mark.skipif(not hasattr(torch.Tensor, "_lazy_clone"), reason="this torch has no copy-on-write clones")
@pytest.mark.parametrize("what", ["param", "exp_avg", "step"])
def test_a_lazy_clone_made_after_a_step_is_not_written_by_the_next(what, plans):
    a, b, oa, ob = _pair(*ADAM)
    _step(a, b, oa, ob)
    source = a[0] if what == "param" else oa.state[a[0]][what]
    clone = source.detach()._lazy_clone()  # shares the storage until either side writes
    before = clone.clone()
    _step(a, b, oa, ob)
    assert torch.equal(clone, before)
    _same(a, b, oa, ob)


# -- F2: sparse grads ------------------------------------------------------------------------


def _sparse_rows(shape, rows):
    values = torch.randn(len(rows), *shape[1:])
    return torch.sparse_coo_tensor(torch.tensor([rows]), values, shape)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("pattern", ["sparse from the start", "sparse later", "sparse, dense, sparse"])
def test_sgd_steps_sparse_grads_as_torch_does(momentum, pattern, plans):
    """Or refuses them as torch does: with momentum, a dense grad after the
    sparse one that started the buffer fails in torch's SGD (a sparse buffer)."""
    kinds = {
        "sparse from the start": "sss",
        "sparse later": "ddss",
        "sparse, dense, sparse": "sdsd",
    }[pattern]
    a, b, oa, ob = _pair(fusedopt.SGD, torch.optim.SGD, dict(lr=0.1, momentum=momentum), shapes=((10, 3), (4,)))
    for k, kind in enumerate(kinds):
        if kind == "s":
            g = _sparse_rows((10, 3), [k % 10, (3 * k + 1) % 10])
            a[0].grad, b[0].grad = g.clone(), g.clone()
            g = torch.randn(4)
            a[1].grad, b[1].grad = g.clone(), g.clone()
        else:
            _grads(a, b)
        try:
            ob.step()
        except RuntimeError as torch_err:
            assert momentum and pattern == "sparse, dense, sparse"  # the one case torch refuses
            before = _everything(oa)
            with pytest.raises(RuntimeError, match=r"add\(sparse, dense\) is not supported"):
                oa.step()
            _unchanged(oa, before)
            assert "add(sparse, dense)" in str(torch_err)
            return
        oa.step()
        _same(a, b, oa, ob)


@pytest.mark.parametrize("cls,torch_cls", [(fusedopt.Adam, torch.optim.Adam), (fusedopt.AdamW, torch.optim.AdamW)])
def test_adam_refuses_a_grad_that_turns_sparse_with_torchs_message(cls, torch_cls, plans):
    a, b, oa, ob = _pair(cls, torch_cls, dict(lr=0.1), shapes=((10, 3), (4,)))
    _step(a, b, oa, ob)
    g = _sparse_rows((10, 3), [1, 5])
    a[0].grad, b[0].grad = g.clone(), g.clone()
    with pytest.raises(RuntimeError, match="does not support sparse gradients") as torch_err:
        ob.step()
    before = _everything(oa)
    with pytest.raises(RuntimeError) as ours:
        oa.step()
    assert str(ours.value) == str(torch_err.value)
    _unchanged(oa, before)


# -- F3: what the optimizer no longer holds ----------------------------------------------------


@pytest.mark.parametrize("cls,torch_cls,kw", [ADAM, SGD_MOMENTUM])
def test_a_deleted_group_and_its_state_are_let_go_by_the_next_step(cls, torch_cls, kw, plans):
    keep = torch.nn.Parameter(torch.randn(4))
    gone = torch.nn.Parameter(torch.randn(4, 4))
    opt = cls([{"params": [keep]}, {"params": [gone]}], **kw)
    keep.grad, gone.grad = torch.randn(4), torch.randn(4, 4)
    opt.step()
    refs = [weakref.ref(gone), weakref.ref(gone.grad)] + [weakref.ref(t) for t in opt.state[gone].values()]
    del opt.param_groups[1]
    opt.state.pop(gone)
    del gone
    keep.grad = torch.randn(4)
    opt.step()
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


def test_replacing_group_dicts_every_step_keeps_nothing_of_the_old_ones(plans):
    a, b, oa, ob = _pair(*SGD_MOMENTUM, shapes=[(3,)] * 6)
    for opt in (oa, ob):
        params = opt.param_groups[0]["params"]
        opt.param_groups[0]["params"] = params[:3]
        opt.add_param_group({"params": params[3:], "lr": 0.05})

    def steps(n):
        for _ in range(n):
            for opt in (oa, ob):  # a new dict for each group, as some schedulers' code does
                opt.param_groups[:] = [dict(g) for g in opt.param_groups]
            _step(a, b, oa, ob)

    steps(20)
    gc.collect()
    objects = len(gc.get_objects())
    steps(200)
    gc.collect()
    # a plan kept per replaced group was ~30 objects a step; a few stray objects
    # (the interpreter's own caches) are not a leak
    assert len(gc.get_objects()) - objects < 100
    _same(a, b, oa, ob)


def test_states_made_by_the_update_then_reset_are_seen_as_reset(plans):
    """SGD hands float64 grads to torch's own SGD, which makes the momentum
    buffers during the update, after the step's plans were checked: clearing
    those states must still rebuild the plans (they once kept the old buffers)."""
    a, b, oa, ob = _pair(*SGD_MOMENTUM, shapes=((4,), (3,)))
    for x in a + b:
        if hasattr(x, "grad_dtype"):
            x.grad_dtype = None  # torch >= 2.12 checks a grad's dtype on assignment
    for kind in (torch.float64, torch.float32, torch.float32, torch.float32):
        for opt in (oa, ob):
            opt.state.clear()
        _grads(a, b, lambda p: torch.randn(p.shape, dtype=kind))
        oa.step()
        ob.step()
        _same(a, b, oa, ob)


# -- F5, F6: a held tensor re-viewed through .data ------------------------------------------


@pytest.mark.parametrize("change", [
    "exp_avg as int32", "exp_avg reshaped", "exp_avg_sq reshaped", "grad reshaped", "param reshaped",
])
def test_a_held_tensor_of_another_dtype_or_shape_is_refused_as_torch_refuses_it(change, plans):
    a, b, oa, ob = _pair(*ADAM)
    _step(a, b, oa, ob)
    _grads(a, b)
    what, how = change.split(" ", 1)
    for opt, p in ((oa, a[0]), (ob, b[0])):
        t = p.grad if what == "grad" else p if what == "param" else opt.state[p][what]
        t.data = t.data.view(torch.int32) if how == "as int32" else t.data.reshape(6, 4)
    if what == "param":
        for p in (a[0], b[0]):
            p.grad = torch.randn(6, 4)  # a grad of the param's new shape
    _both_refuse(oa, ob, RuntimeError)


def test_an_sgd_momentum_buffer_reshaped_is_refused(plans):
    a, b, oa, ob = _pair(*SGD_MOMENTUM)
    _step(a, b, oa, ob)
    _grads(a, b)
    for opt, p in ((oa, a[0]), (ob, b[0])):
        buf = opt.state[p]["momentum_buffer"]
        buf.data = buf.data.reshape(6, 4)
    _both_refuse(oa, ob, RuntimeError)


# -- F7: a step counter of -1 ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["set by hand", "from a checkpoint", "in place"])
def test_a_step_counter_of_minus_one_raises_torchs_zero_division(how, plans):
    a, b, oa, ob = _pair(*ADAM)
    _step(a, b, oa, ob)
    _grads(a, b)
    for opt, p in ((oa, a[1]), (ob, b[1])):
        if how == "set by hand":
            opt.state[p]["step"] = torch.tensor(-1.0)
        elif how == "in place":
            opt.state[p]["step"].fill_(-1.0)
        else:
            sd = opt.state_dict()
            sd["state"][1]["step"] = torch.tensor(-1.0)
            opt.load_state_dict(sd)
    _both_refuse(oa, ob, ZeroDivisionError)


# -- F8: inference tensors -----------------------------------------------------------------------


@pytest.mark.parametrize("made", ["params", "state"])
def test_inference_tensors_are_not_updated_outside_inference_mode(made, plans):
    if made == "params":
        with torch.inference_mode():
            a, b, oa, ob = _pair(*ADAM)
        _grads(a, b)
    else:
        a, b, oa, ob = _pair(*ADAM)
        _grads(a, b)
        with torch.inference_mode():  # torch allows this step: its state is made of inference tensors
            oa.step()
            ob.step()
        _same(a, b, oa, ob)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode") as torch_err:
        ob.step()
    before = _everything(oa)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        oa.step()
    _unchanged(oa, before)
    assert "InferenceMode" in str(torch_err.value)


# -- F9: a state that changes layout under a channels_last param -------------------------------


@pytest.mark.parametrize("cls,torch_cls,kw", [ADAM, SGD_MOMENTUM])
def test_a_state_made_contiguous_under_a_channels_last_param_steps_as_torch(cls, torch_cls, kw, plans):
    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    a = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(x.clone(memory_format=torch.preserve_format))]
    b = [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format)) for p in a]
    oa, ob = cls(a, **kw), torch_cls(b, **kw)
    make = lambda p: torch.randn_like(p)  # noqa: E731 (keeps the layout)
    _grads(a, b, make)
    oa.step()
    ob.step()
    key = "exp_avg" if cls is fusedopt.AdamW else "momentum_buffer"
    for opt, p in ((oa, a[1]), (ob, b[1])):
        st = opt.state[p][key]
        st.data = st.data.contiguous()
    for _ in range(2):
        _grads(a, b, make)
        oa.step()
        ob.step()
    _same(a, b, oa, ob)
