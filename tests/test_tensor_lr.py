"""A tensor lr as torch takes it, on every route: one element of any shape
(torch squeezes it), float32 or float64, and the constants each optimizer's
reference derives from it in the tensor's own dtype. fp32 params take the
native kernels (where built), fp64 and complex params the plain-torch
fallback; both against torch.optim (Adam, AdamW, SGD, Adagrad) and lion-pytorch
(Lion), bit for bit where the two compute the same ops (Adagrad's and Adam's
native sqrt is the IEEE one, torch's MKL's: those compare within an ulp)."""

from __future__ import annotations

import copy

import pytest
import torch

import fusedopt
from conftest import NATIVE_CPU
from helpers import clone_params, make_grads, make_params, set_grads

SHAPES = [(7, 5), (33,), (1000,)]


def _twins(dtype):
    pa = make_params(SHAPES, dtype=dtype)
    return pa, clone_params(pa)


def _steps(opt, params, steps=6):
    for step in range(steps):
        set_grads(params, make_grads(params, step, scale=3.0))
        opt.step()


def _torch_pair(name):
    if name == "Lion":
        lion_pytorch = pytest.importorskip("lion_pytorch")
        return fusedopt.Lion, lion_pytorch.Lion
    return getattr(fusedopt, name), getattr(torch.optim, name)


CASES = [
    ("Adam", {"weight_decay": 0.1}),
    ("AdamW", {"weight_decay": 0.5}),
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("Adagrad", {"lr_decay": 0.0225, "weight_decay": 0.1}),
    ("Lion", {"weight_decay": 1.5183292618512019}),
]


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=["0-dim", "(1,)", "(1,1)"])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_a_one_element_lr_of_any_shape_steps_every_route(name, kwargs, shape):
    """fp32 (native) and fp64 (fallback) params in one optimizer: torch takes a
    one-element lr of any shape, and so must every fusedopt route, before
    anything is written (a refusal half way would leave a half-applied step)."""
    ours_cls, theirs_cls = _torch_pair(name)
    pa = make_params(SHAPES) + make_params([(9,)], dtype=torch.float64)
    pb = clone_params(pa)
    lr = torch.full(shape, 0.0844577)
    ours = ours_cls(pa, lr=lr.clone(), **kwargs)
    # lion-pytorch refuses a lr of shape (1,) in its alpha=-lr: it gets the 0-dim one
    theirs = theirs_cls(pb, lr=lr.clone().reshape(()) if name == "Lion" else lr.clone(), **kwargs)
    _steps(ours, pa, 3)
    _steps(theirs, pb, 3)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("param_dtype", [torch.float32, torch.float64])
def test_lion_with_a_tensor_lr_is_lion_pytorch_bit_for_bit(param_dtype, lr_dtype):
    """lion-pytorch's decay 1 - lr * wd is a tensor op in the lr's dtype."""
    ours_cls, theirs_cls = _torch_pair("Lion")
    pa, pb = _twins(param_dtype)
    lr = torch.tensor(0.08445774296735231, dtype=lr_dtype)
    ours = ours_cls(pa, lr=lr.clone(), weight_decay=1.5183292618512019)
    theirs = theirs_cls(pb, lr=lr.clone(), weight_decay=1.5183292618512019)
    _steps(ours, pa)
    _steps(theirs, pb)
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach(), b.detach())
    for a, b in zip(pa, pb):
        assert torch.equal(ours.state[a]["exp_avg"], theirs.state[b]["exp_avg"])


@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64, None], ids=["f32 tensor", "f64 tensor", "float"])
def test_adagrad_fallback_with_lr_decay_is_torchs_bit_for_bit(lr_dtype):
    """fp64 params take the plain-torch path: clr = lr / (1 + (step - 1) *
    lr_decay) as torch derives it, a true division in double for a float lr
    and a tensor op in the lr's dtype for a tensor one."""
    pa, pb = _twins(torch.float64)
    lr = 0.05 if lr_dtype is None else torch.tensor(0.05, dtype=lr_dtype)
    kwargs = {"lr_decay": 0.3, "weight_decay": 0.1}
    ours = fusedopt.Adagrad(pa, lr=copy.deepcopy(lr), **kwargs)
    theirs = torch.optim.Adagrad(pb, lr=copy.deepcopy(lr), foreach=False, **kwargs)
    _steps(ours, pa)
    _steps(theirs, pb)
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.skipif(not NATIVE_CPU, reason="the native kernels' step constants (the fallback pass checks the fallback)")
def test_adagrad_native_step_size_from_a_float32_lr_is_torchs():
    """With a float32 tensor lr torch computes clr in float32; the native kernels
    must too. The only other difference is MKL's sqrt, which an exact sqrt on
    torch's side removes: an update through the kernels then equals torch's
    op-by-op computation with a correctly rounded sqrt."""
    p = torch.nn.Parameter(torch.rand(4099) + 0.5)
    ref = p.detach().clone()
    opt = fusedopt.Adagrad([p], lr=torch.tensor(0.27886), lr_decay=0.0225)
    s = torch.zeros_like(ref)
    for step in range(1, 7):
        g = make_grads([p], step)[0]
        p.grad = g.clone()
        opt.step()
        # torch's single-tensor Adagrad, with the IEEE sqrt (float64 root, rounded: exact for float32)
        s.addcmul_(g, g, value=1)
        std = s.double().sqrt().float().add_(1e-10)
        clr = torch.tensor(0.27886) / (1 + (step - 1) * 0.0225)
        ref.addcdiv_(g, std, value=-clr)
    assert torch.equal(p.detach(), ref)


def test_lion_on_complex_params_takes_the_complex_sign():
    """lion-pytorch's sgn_ of a complex update is z / |z|, not the sign of each part."""
    ours_cls, theirs_cls = _torch_pair("Lion")
    gen = torch.Generator().manual_seed(3)
    pa = [torch.nn.Parameter(torch.randn(64, dtype=torch.complex64, generator=gen))]
    pb = clone_params(pa)
    ours, theirs = ours_cls(pa, lr=0.1, weight_decay=0.1), theirs_cls(pb, lr=0.1, weight_decay=0.1)
    for step in range(3):
        g = torch.randn(64, dtype=torch.complex64, generator=gen)
        pa[0].grad, pb[0].grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert torch.equal(pa[0].detach(), pb[0].detach())
