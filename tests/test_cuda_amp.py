"""AMP and global norms on CUDA: grad_stats (determinism, accuracy, overflow),
unscale_, torch.amp.GradScaler driving a fusedopt optimizer, and
fusedopt.clip_grad_norm_ against torch's."""

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import DEV, DTYPES, SUMSQ_RTOL, ULP, assert_ulps, cpu_values, twin_params

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend")]


def _stats(grads, scale=None):
    device = grads[0].device
    found, sumsq = torch.zeros(1, device=device), torch.zeros(1, device=device)
    s = None if scale is None else torch.tensor([scale], device=device)
    torch.ops.fusedopt.grad_stats_(grads, s, found, sumsq)
    return found.item(), sumsq.item()


@requires_cuda_kernels
def test_grad_stats_is_deterministic_and_accurate():
    grads = [torch.randn(n, device=DEV).to(dt) * 7 for n, dt in zip((5, 1 << 20, 300_001, 4096 * 3000), DTYPES * 2)]
    results = []
    for _ in range(5):
        found, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
        torch.ops.fusedopt.grad_stats_(grads, torch.tensor(128.0, device=DEV), found, sumsq)
        results.append(sumsq.clone())
        assert found.item() == 0.0
    assert all(torch.equal(r, results[0]) for r in results)
    expected = sum(((g.double() / 128.0) ** 2).sum() for g in grads)
    torch.testing.assert_close(results[0].double().reshape(()), expected, rtol=1e-6, atol=0)
    grads[2][777] = float("nan")
    assert _stats(grads, 128.0)[0] == 1.0


@requires_cuda_kernels
def test_grad_stats_of_magnitudes_over_twenty_decades():
    # fp32 partial sums (csrc/cuda/amp.cu) against the exact sum, on values whose
    # squares span 1e-20..1e20: within the bound whatever the mix
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3_000_001, generator=gen) * torch.pow(10.0, torch.empty(3_000_001).uniform_(-10, 10, generator=gen))
    exact = x.double().square().sum()
    _, got = _stats([x.to(DEV)])
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), exact, rtol=SUMSQ_RTOL, atol=0)


@requires_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_stats_matches_the_cpu_kernels(dtype):
    grads = [cpu_values(n, k, dtype, scale=100.0) for k, n in enumerate((3, 1001, 65536 + 37, 3 << 20))]
    f_gpu, s_gpu = _stats([g.to(DEV) for g in grads], 64.0)
    f_cpu, s_cpu = _stats(grads, 64.0)
    assert f_gpu == f_cpu == 0.0
    assert abs(s_gpu - s_cpu) <= SUMSQ_RTOL * s_cpu


@requires_cuda_kernels
def test_finite_grads_whose_squares_overflow_fp32_are_not_infs():
    # (1e20)^2 overflows fp32; the kernel redoes such a thread in fp64, so, as on
    # the CPU, sumsq becomes inf but found_inf stays clear (the clip then zeroes
    # the step, as torch's clip_grad_norm_ would; it is not a skipped step)
    g = torch.full((70_000,), 1e20)
    g[::7] = 0.5
    for device in (DEV, "cpu"):
        found, sumsq = _stats([g.to(device)])
        assert found == 0.0 and sumsq == float("inf"), device
    g[1234] = float("inf")
    assert _stats([g.to(DEV)])[0] == 1.0


@requires_cuda_kernels
def test_grad_stats_of_nothing_changes_nothing():
    found, sumsq = torch.full((1,), 0.0, device=DEV), torch.full((1,), 2.5, device=DEV)
    torch.ops.fusedopt.grad_stats_([torch.empty(0, device=DEV), torch.empty(3, 0, device=DEV)], None, found, sumsq)
    assert found.item() == 0.0 and sumsq.item() == 2.5


@requires_cuda_kernels
def test_unscale_handles_bf16():
    g = [torch.randn(n, device=DEV).to(dt) * 1000 for n, dt in zip((3, 70001, 65536), DTYPES)]
    ref = [x.float() / 1024.0 for x in g]
    found = torch.zeros(1, device=DEV)
    torch.ops.fusedopt.unscale_(g, found, torch.tensor(1 / 1024.0, device=DEV))
    for a, b in zip(g, ref):
        assert torch.equal(a, b.to(a.dtype))
    assert found.item() == 0.0


@pytest.mark.parametrize("idiom", [False, True])
def test_torch_gradscaler_drives_fusedopt_like_torch(idiom):
    # torch's scaler hands fusedopt the scale and found_inf (its AMP protocol);
    # the run must track torch's own pipeline, skipped steps and scale included
    base, _ = twin_params(((1001,), (65536 + 37,), (64, 300)), torch.float32)
    a = [torch.nn.Parameter(p.detach().clone()) for p in base]
    b = [torch.nn.Parameter(p.detach().clone()) for p in base]
    clip = None if idiom else 1.0
    oa = fusedopt.AdamW(a, lr=0.01, weight_decay=0.1, max_grad_norm=clip)
    ob = torch.optim.AdamW(b, lr=0.01, weight_decay=0.1, fused=True)
    sa = torch.amp.GradScaler(DEV, init_scale=1024.0, growth_interval=2)
    sb = torch.amp.GradScaler(DEV, init_scale=1024.0, growth_interval=2)
    for s in (sa, sb):
        s.scale(torch.zeros((), device=DEV))  # creates the scale tensor, as scale(loss) would
    for step, poison in enumerate([False, True, False, False, True, False, False]):
        grads = [cpu_values(p.shape, 50 * step + k, scale=1024.0) for k, p in enumerate(base)]
        if poison:
            grads[1][777] = float("inf")
        for params, opt, scaler, clip_fn in ((a, oa, sa, fusedopt.clip_grad_norm_),
                                             (b, ob, sb, torch.nn.utils.clip_grad_norm_)):
            for p, g in zip(params, grads):
                p.grad = g.to(DEV, copy=True)
            if idiom or opt is ob:
                scaler.unscale_(opt)
                clip_fn(params, 1.0)
            scaler.step(opt)
            scaler.update()
        assert sa.get_scale() == sb.get_scale(), step
    # five applied steps, each a rounding or two from torch's fused kernel (which
    # contracts to FMA), and norms that differ in the last bits
    assert_ulps(a, b, torch.float32, 8, "params")
    for p, q in zip(a, b):
        assert float(oa.state[p]["step"]) == float(ob.state[q]["step"]) == 5.0
        assert_ulps([oa.state[p]["exp_avg"]], [ob.state[q]["exp_avg"]], torch.float32, 8, "exp_avg")


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_norm_matches_torch(dtype):
    base, _ = twin_params(((5,), (1001,), (65536 + 37,), (64, 300)), dtype)
    a = [torch.nn.Parameter(p.detach().clone()) for p in base]
    b = [torch.nn.Parameter(p.detach().clone()) for p in base]
    for k, (p, q) in enumerate(zip(a, b)):
        p.grad = cpu_values(p.shape, 90 + k, dtype, scale=3.0).to(DEV)
        q.grad = p.grad.clone()
    na = fusedopt.clip_grad_norm_(a, 1.0)
    nb = torch.nn.utils.clip_grad_norm_(b, 1.0)
    assert na.dtype == nb.dtype == dtype and na.device == nb.device
    # fusedopt sums in fp32 and rounds only the returned norm to the grads'
    # dtype; torch computes in that dtype: per-tensor norms, their norm, norm +
    # 1e-6 and the coefficient are each rounded to it, so for 16-bit grads its
    # coefficient, and the clipped grads, may be a few ulps from fusedopt's. For
    # fp32, both are within the accuracy of the norms.
    tol = SUMSQ_RTOL if dtype == torch.float32 else 4 * ULP[dtype]
    torch.testing.assert_close(na, nb, rtol=tol, atol=0)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad, rtol=tol, atol=tol * 1e-3)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_clip_grad_norm_with_a_non_finite_norm_matches_torch(bad):
    base, _ = twin_params(((1001,), (65536 + 37,)), torch.float32)
    grads = [cpu_values(p.shape, 7 + k, scale=3.0) for k, p in enumerate(base)]
    grads[1][4321] = bad
    out = []
    for clip in (fusedopt.clip_grad_norm_, torch.nn.utils.clip_grad_norm_):
        params = [torch.nn.Parameter(p.detach().clone()) for p in base]
        for p, g in zip(params, grads):
            p.grad = g.to(DEV, copy=True)
        with pytest.raises(RuntimeError, match="non-finite"):
            clip(params, 1.0, error_if_nonfinite=True)
        for p, g in zip(params, grads):  # refused: nothing scaled
            torch.testing.assert_close(p.grad.cpu(), g, rtol=0, atol=0, equal_nan=True)
        norm = clip(params, 1.0)
        out.append((norm, [p.grad for p in params]))
    (na, ga), (nb, gb) = out
    torch.testing.assert_close(na, nb, equal_nan=True)
    assert na.isinf().item() == (bad == float("inf"))
    for x, y in zip(ga, gb):  # coefficient 0 (inf norm) or nan: the same grads, nan where torch has nan
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
