"""fusedopt's options on the CUDA kernels against the same optimizer on the CPU
kernels: bf16 states for fp32 params, master weights, amsgrad with bf16
states, zero-element and channels_last params, a skipped first step, maximize
with clipping. Bit for bit, except where the global norm is involved (see
cuda_common.py)."""

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import DEV, SUMSQ_RTOL, ULP, assert_same_bits, assert_ulps, set_twin_grads, twin_params

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend", "kernels_only"), requires_cuda_kernels]

SHAPES = ((3,), (1001,), (65536 + 37,), (64, 300))


def _run(cls, kwargs, shapes=SHAPES, dtype=torch.float32, steps=3, grad_dtype=None, memory_format=None,
         scale=None, poison=()):
    """The same steps on twin params, GPU and CPU; with `scale`, through
    fusedopt's GradScaler (grads made as if scaled by it; `poison`: steps whose
    grads hold an inf)."""
    gpu, cpu = twin_params(shapes, dtype, memory_format=memory_format)
    og, oc = cls(gpu, **kwargs), cls(cpu, **kwargs)
    scalers = None
    if scale is not None:
        scalers = (fusedopt.GradScaler(DEV, init_scale=scale), fusedopt.GradScaler("cpu", init_scale=scale))
        for s, p in zip(scalers, (gpu[0], cpu[0])):
            s.scale(torch.zeros((), device=p.device))  # creates the scale tensor, as scale(loss) would
    for step in range(steps):
        set_twin_grads(gpu, cpu, step, grad_dtype=grad_dtype, scale=scale or 1.0, poison=step in poison)
        if scalers is None:
            og.step()
            oc.step()
        else:
            for s, o in zip(scalers, (og, oc)):
                s.step(o)
                s.update()
    return gpu, cpu, og, oc, scalers


def _assert_twins(gpu, cpu, og, oc, compare=assert_same_bits, **kw):
    compare(gpu, cpu, what="params", **kw)
    keys = sorted({k for p in cpu for k in oc.state[p]})
    for key in keys:
        a = [og.state[p][key] for p in gpu if key in og.state[p]]
        b = [oc.state[p][key] for p in cpu if key in oc.state[p]]
        assert len(a) == len(b), key
        if key == "step":
            assert_same_bits(a, b, "step")
        else:
            compare(a, b, what=key, **kw)


def test_bf16_states_for_fp32_params():
    gpu, cpu, og, oc, _ = _run(fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1, state_dtype=torch.bfloat16))
    assert og.state[gpu[0]]["exp_avg"].dtype == torch.bfloat16
    _assert_twins(gpu, cpu, og, oc)


def test_amsgrad_with_bf16_states():
    gpu, cpu, og, oc, _ = _run(fusedopt.Adam, dict(lr=0.01, amsgrad=True, state_dtype=torch.bfloat16))
    assert og.state[gpu[0]]["max_exp_avg_sq"].dtype == torch.bfloat16
    _assert_twins(gpu, cpu, og, oc)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grad_dtype", [None, torch.float32])
@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
])
def test_master_weights(dtype, grad_dtype, cls, kwargs):
    gpu, cpu, og, oc, _ = _run(cls, dict(kwargs, master_weights=True), dtype=dtype, grad_dtype=grad_dtype)
    assert og.state[gpu[0]]["master_param"].dtype == torch.float32
    _assert_twins(gpu, cpu, og, oc)


@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9)),
])
def test_zero_element_params(cls, kwargs):
    shapes = ((0,), (1001,), (3, 0, 2), (5,), (0,))
    gpu, cpu, og, oc, _ = _run(cls, kwargs, shapes=shapes)
    _assert_twins(gpu, cpu, og, oc)
    if cls is fusedopt.AdamW:  # torch counts steps for empty params too
        assert [float(og.state[p]["step"]) for p in gpu] == [3.0] * len(shapes)


@pytest.mark.parametrize("memory_format,shapes", [
    (torch.channels_last, ((8, 3, 5, 5), (16, 7, 3, 3), (4, 130, 11, 13))),
    (torch.channels_last_3d, ((4, 3, 5, 5, 2), (2, 9, 3, 3, 3))),
])
@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9)),
])
def test_channels_last_params(memory_format, shapes, cls, kwargs):
    gpu, cpu, og, oc, _ = _run(cls, kwargs, shapes=shapes, memory_format=memory_format)
    assert all(p.is_contiguous(memory_format=memory_format) and not p.is_contiguous() for p in gpu)
    state_key = "exp_avg" if cls is fusedopt.AdamW else "momentum_buffer"
    assert all(og.state[p][state_key].is_contiguous(memory_format=memory_format) for p in gpu)
    _assert_twins(gpu, cpu, og, oc)


@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
])
def test_a_skipped_first_step_leaves_no_trace(cls, kwargs):
    # step 0 overflows: nothing may change, Adam's step stays 0 and SGD's buffer
    # stays "not yet applied", so that step 1 starts it from its own gradient
    gpu, cpu, og, oc, scalers = _run(cls, kwargs, steps=1, scale=1024.0, poison=(0,))
    base, _ = twin_params(SHAPES, torch.float32)
    assert_same_bits(gpu, [p.detach().cpu() for p in base], "params after the skipped step")
    for p in gpu:
        if cls is fusedopt.AdamW:
            assert float(og.state[p]["step"]) == 0.0
            assert not og.state[p]["exp_avg"].any() and not og.state[p]["exp_avg_sq"].any()
        else:
            assert bool(og._momentum_first[p])
            assert not og.state[p]["momentum_buffer"].any()  # zeros, never uninitialised memory
    assert scalers[0].get_scale() == scalers[1].get_scale() == 512.0

    gpu, cpu, og, oc, _ = _run(cls, kwargs, steps=3, scale=1024.0, poison=(0,))
    _assert_twins(gpu, cpu, og, oc)
    if cls is fusedopt.AdamW:
        assert all(float(og.state[p]["step"]) == 2.0 for p in gpu)


@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1, maximize=True, max_grad_norm=1.0)),
    (fusedopt.Adam, dict(lr=0.01, amsgrad=True, maximize=True, max_grad_norm=1.0)),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True, max_grad_norm=1.0)),
])
def test_maximize_with_clipping(cls, kwargs):
    # Grads of norm ~300 against max_norm 1: the clip is active every step. The
    # sums of squares agree to SUMSQ_RTOL (the bound; ~1e-8 in practice), the
    # norms and the clip coefficients to half that plus a rounding or two. exp_avg and a momentum buffer scale with the
    # coefficient, exp_avg_sq with its square: a state may be SUMSQ_RTOL apart,
    # plus a few roundings over three steps; a param moves by less (Adam's update
    # hardly depends on the grads' scale, SGD's steps are small against the
    # params). The same updates with a shared norm are compared bit for bit in
    # test_cuda_harness.py.
    gpu, cpu, og, oc, _ = _run(cls, kwargs)
    torch.testing.assert_close(og.last_grad_norm.cpu(), oc.last_grad_norm, rtol=SUMSQ_RTOL, atol=0)
    ulps = 4 + SUMSQ_RTOL / ULP[torch.float32]
    _assert_twins(gpu, cpu, og, oc, compare=assert_ulps, dtype=torch.float32, ulps=ulps)
