"""Compiled and eager steps on one optimizer: the compiled step's bucketing
(_init_group, run at trace time) leaves a cache that a later eager step
re-checks and reuses, and the steps together equal eager steps alone."""

import pytest
import torch

import fusedopt
from helpers import fp32_tol


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


CONFIGS = {
    "AdamW clip": (fusedopt.AdamW, dict(lr=0.01, max_grad_norm=1.0), torch.float32),
    "SGD momentum": (fusedopt.SGD, dict(lr=0.1, momentum=0.9), torch.float32),
    "AdamW float64 (reference path)": (fusedopt.AdamW, dict(lr=0.01), torch.float64),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_eager_steps_after_compiled_ones_equal_eager_steps(name):
    cls, kw, dtype = CONFIGS[name]
    gen = torch.Generator().manual_seed(0)
    shapes = [(7,), (3, 5), (64,)]
    pa = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    pb = [torch.nn.Parameter(p.detach().clone()) for p in pa]
    oa, ob = cls(pa, **kw), cls(pb, **kw)
    compiled = torch.compile(oa.step, fullgraph=True, backend="eager")
    for i in range(6):
        for a, b in zip(pa, pb):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        (compiled if i in (0, 1, 4) else oa.step)()
        ob.step()
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, **fp32_tol())
        for k in ob.state[b]:
            torch.testing.assert_close(oa.state[a][k], ob.state[b][k], **fp32_tol())
