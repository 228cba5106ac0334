"""torch's own optimizer test database, imported from the installed torch at
test time (torch.testing._internal.common_optimizers, never copied here): every
configuration torch runs Adam, AdamW, SGD and Adagrad with on the CPU, including the
foreach / fused / differentiable variants, steps fusedopt and torch side by
side; every error input torch checks raises (or warns) in fusedopt with the same
exception type and message."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import fusedopt

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's optimizer test database needs torch's test dependencies (numpy, expecttest)",
)

NAMES = ("Adam", "AdamW", "SGD", "Adagrad")
INFOS = {info.name: info for info in common_optimizers.optim_db if info.name in NAMES}
OURS = {name: getattr(fusedopt, name) for name in NAMES}


def _configs():
    for name in NAMES:
        info = INFOS[name]
        for dtype in (torch.float32, torch.float64, torch.complex64):
            if dtype.is_complex and not info.supports_complex:
                continue
            for cfg in common_optimizers._get_optim_inputs_including_global_cliquey_kwargs("cpu", dtype, info):
                yield pytest.param(name, dtype, cfg, id=f"{name}-{str(dtype)[6:]}-{cfg.desc}")


def _params(dtype, differentiable, seed=0):
    """A weight, a bias and a scalar, in two groups; non-leaf copies for a
    differentiable step (torch refuses in-place updates of leaves that need grad)."""
    gen = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(shape, generator=gen, dtype=dtype) for shape in ((10, 5), (10,), ())]
    if differentiable:
        return [t.requires_grad_().clone() for t in leaves]
    return [torch.nn.Parameter(t) for t in leaves]


def _grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]


def _run(cls, dtype, kwargs, steps=4):
    differentiable = bool(kwargs.get("differentiable"))
    params = _params(dtype, differentiable)
    kwargs = copy.deepcopy(kwargs)  # tensor lr/betas: each optimizer gets its own
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], **kwargs)
    for step in range(steps):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    return params, opt


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - compared with torch's below
        return None, (type(exc), str(exc))


def _tolerance(dtype):
    if dtype in (torch.float64,):
        return dict(rtol=1e-12, atol=1e-14)
    # a few ulps after several steps: the fused and differentiable variants of
    # torch round differently from its default path (which fusedopt reproduces:
    # test_torch_bitwise.py), and torch's sqrt is not correctly rounded
    return dict(rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name,dtype,cfg", list(_configs()))
def test_every_cpu_configuration_matches_torch(name, dtype, cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        theirs, their_error = _outcome(lambda: _run(INFOS[name].optim_cls, dtype, cfg.kwargs))
        ours, our_error = _outcome(lambda: _run(OURS[name], dtype, cfg.kwargs))
    assert our_error == their_error
    if their_error is not None:
        return
    (pa, oa), (pb, ob) = ours, theirs
    tol = _tolerance(dtype)
    for i, (a, b) in enumerate(zip(pa, pb)):
        torch.testing.assert_close(a.detach(), b.detach(), msg=lambda m, i=i: f"param {i}: {m}", **tol)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sb["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        for key, v in sb["state"][k].items():
            mine = sa["state"][k][key]
            if key == "step":
                assert float(mine) == float(v)
            else:
                torch.testing.assert_close(mine.detach(), v.detach(), **tol)


def _error_inputs():
    for name in NAMES:
        info = INFOS[name]
        for i, err in enumerate(info.optim_error_inputs_func(device="cpu", dtype=torch.float32)):
            yield pytest.param(name, i, id=f"{name}-{err.optimizer_error_input.desc}")


def _error_of(cls, err) -> tuple:
    """What the error input does to `cls`: (kind, type, message) of the first
    exception or matching warning."""
    enum = common_optimizers.OptimizerErrorEnum
    inp = err.optimizer_error_input
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = cls(inp.params, **inp.kwargs)
            if err.error_on == enum.STEP_ERROR:
                opt.step()
        except Exception as exc:  # noqa: BLE001 - compared with torch's below
            return ("raised", type(exc), str(exc))
    relevant = [w for w in caught if issubclass(w.category, err.error_type)]
    if relevant:
        return ("warned", relevant[0].category, str(relevant[0].message))
    return ("nothing",)


@pytest.mark.parametrize("name,index", list(_error_inputs()))
def test_every_error_input_gives_torchs_exception_and_message(name, index):
    # fresh inputs for each optimizer: an input may hold tensors a step changes
    make = INFOS[name].optim_error_inputs_func
    theirs = _error_of(INFOS[name].optim_cls, make(device="cpu", dtype=torch.float32)[index])
    err = make(device="cpu", dtype=torch.float32)[index]
    ours = _error_of(OURS[name], err)
    assert theirs[0] != "nothing", "torch's database expects an error here"
    assert ours == theirs
    assert issubclass(ours[1], err.error_type)
