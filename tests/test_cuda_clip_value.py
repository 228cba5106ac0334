"""Clipping by value on a GPU: the CUDA clip_value_ kernel, and max_value in the
CUDA update and stats kernels, against torch and the reference.

Every test here carries the `cuda` marker and is skipped without a GPU."""

import pytest
import torch

import fusedopt
from fusedopt import _ops, reference

pytestmark = pytest.mark.cuda

DEV = "cuda"
SIZES = (1, 3, 17, 1000, 65537, 300_001)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _grads(dtype, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=gen) * scale).to(dtype=dtype, device=DEV) for n in SIZES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip_value", [0.5, -1.0])
def test_clip_value_kernel_matches_torch(dtype, clip_value):
    grads = _grads(dtype)
    grads[2][3], grads[4][0], grads[5][-1] = float("nan"), float("inf"), -float("inf")
    ref = [g.clone() for g in grads]
    torch.ops.fusedopt.clip_value_(grads, clip_value)
    torch._foreach_clamp_min_(ref, -clip_value)
    torch._foreach_clamp_max_(ref, clip_value)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_stats_with_max_value_matches_the_reference(dtype):
    grads = _grads(dtype)
    scale = torch.tensor([4.0], device=DEV)
    out = []
    for ops in (_ops.ops_for(torch.device(DEV)), reference):
        found, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
        ops.grad_stats_(grads, scale, found, sumsq, 0.25)
        out.append((found.item(), sumsq.item()))
    assert out[0][0] == out[1][0] == 0.0
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-6, atol=0)
    grads[3][10] = float("inf")  # clamped in the sum, still an overflow
    found, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
    _ops.ops_for(torch.device(DEV)).grad_stats_(grads, scale, found, sumsq, 0.25)
    assert found.item() == 1.0 and torch.isfinite(sumsq).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,kw", [(fusedopt.AdamW, dict(lr=1e-2)), (fusedopt.SGD, dict(lr=1e-2, momentum=0.9))])
def test_max_grad_value_in_the_cuda_step_is_clip_grad_value_first(dtype, cls, kw):
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype=dtype, device=DEV)) for n in SIZES]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oa, ob = cls(a, max_grad_value=0.5, **kw), cls(b, **kw)
    for step in range(3):
        for x, y, g in zip(a, b, _grads(dtype, seed=step + 1)):
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        torch.nn.utils.clip_grad_value_(b, 0.5)
        ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach())
