"""fusedopt.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_."""

import pytest
import torch

import fusedopt


def _pair(dtypes=(torch.float32,) * 3, sizes=(7, 1000, 40001), scale=3.0):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(n).to(dt)) for n, dt in zip(sizes, dtypes)]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    for x, y in zip(a, b):
        g = (torch.randn(x.shape) * scale).to(x.dtype)
        x.grad, y.grad = g.clone(), g.clone()
    return a, b


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_matches_torch(norm_type, max_norm):
    a, b = _pair()
    na = fusedopt.clip_grad_norm_(a, max_norm, norm_type=norm_type)
    nb = torch.nn.utils.clip_grad_norm_(b, max_norm, norm_type=norm_type)
    assert na.dtype == nb.dtype and na.shape == nb.shape
    torch.testing.assert_close(na, nb, rtol=1e-6, atol=0)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=2e-6, atol=1e-7)
    if max_norm < 1:
        assert float(na) > max_norm  # the grads really were clipped


def test_mixed_dtypes_and_a_single_tensor():
    a, b = _pair(dtypes=(torch.float32, torch.bfloat16, torch.float16))
    # torch rejects stacking norms of mixed dtypes, so compare with an fp64 computation
    expected = torch.sqrt(sum((x.grad.double() ** 2).sum() for x in b))
    norm = fusedopt.clip_grad_norm_(a, 1.0)
    torch.testing.assert_close(norm.double(), expected, rtol=1e-6, atol=0)
    coef = 1.0 / (float(norm) + 1e-6)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad.float(), (y.grad.float() * coef).to(y.dtype).float(), rtol=1e-2, atol=1e-6)
    single = torch.nn.Parameter(torch.randn(10))
    single.grad = torch.randn(10) * 10
    ref = single.grad.clone()
    n = fusedopt.clip_grad_norm_(single, 1.0)
    torch.testing.assert_close(n, ref.norm(), rtol=1e-6, atol=0)


def test_error_if_nonfinite():
    a, b = _pair()
    a[1].grad[3] = float("nan")
    b[1].grad[3] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(b, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        fusedopt.clip_grad_norm_(a, 1.0, error_if_nonfinite=True)
    assert torch.isnan(fusedopt.clip_grad_norm_(a, 1.0))


def test_empty_parameter_lists():
    for params in ([], [torch.nn.Parameter(torch.randn(3))]):  # no grads at all
        ours = fusedopt.clip_grad_norm_(params, 1.0)
        theirs = torch.nn.utils.clip_grad_norm_(params, 1.0)
        assert torch.equal(ours, theirs)


def test_returns_norm_before_clipping_and_unscaled_grads_untouched_when_small():
    a, _ = _pair(scale=1e-4)
    before = [x.grad.clone() for x in a]
    fusedopt.clip_grad_norm_(a, 10.0)
    for x, g in zip(a, before):
        assert torch.equal(x.grad, g)  # coefficient clamped to 1: multiplying by 1 is exact


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_norm_beyond_the_grads_dtype_is_non_finite_as_in_torch(dtype):
    # each element is finite in fp16, the norm (about 1.9e5) is not
    a, b = _pair(dtypes=(dtype,) * 3, sizes=(10, 10, 10))
    big = 60000.0 if dtype is torch.float16 else 3e38
    for x, y in zip(a, b):
        x.grad.fill_(big)
        y.grad.fill_(big)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(b, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        fusedopt.clip_grad_norm_(a, 1.0, error_if_nonfinite=True)
    # without the error: torch returns inf and scales by 1/inf, i.e. zeroes the grads
    na = fusedopt.clip_grad_norm_(a, 1.0)
    nb = torch.nn.utils.clip_grad_norm_(b, 1.0)
    assert na.dtype == nb.dtype and torch.isinf(na) and torch.isinf(nb)
    for x, y in zip(a, b):
        assert torch.equal(x.grad, y.grad)


@pytest.mark.parametrize("cls,torch_cls", [(fusedopt.SGD, torch.optim.SGD), (fusedopt.Adagrad, torch.optim.Adagrad)])
def test_sparse_grads_count_in_max_grad_norm_as_their_dense_values(cls, torch_cls):
    """An nn.Embedding(sparse=True) with max_grad_norm: its grad (repeated ids
    summed) counts in the global norm as its dense value does, and the step is
    torch's on the clipped grads."""
    import copy

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Embedding(11, 4, sparse=True), torch.nn.Linear(4, 3))
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    opt = cls(ours.parameters(), lr=0.1, max_grad_norm=0.05)
    ref = torch_cls(theirs.parameters(), lr=0.1)
    ids = torch.tensor([[1, 2, 3, 1, 1]])
    for model in (ours, theirs):
        model[1](model[0](ids)).square().mean().backward()
    dense = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in theirs.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in dense]))
    coef = min(1.0, 0.05 / (float(norm) + 1e-6))
    for p in theirs.parameters():
        p.grad = p.grad * coef
    opt.step()
    ref.step()
    torch.testing.assert_close(float(opt.last_grad_norm), float(norm), rtol=1e-6, atol=0)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
