"""The CUDA kernels on a GPU: parity with torch's fused CUDA optimizers and with
an fp64 reference, skipped steps, huge tensors, CUDA graphs, no host syncs.
(More, by topic, in test_cuda_*.py.)

Every test here carries the `cuda` marker and is skipped without a GPU."""

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import DEV, DTYPES, ULP, adam_op, assert_unchanged, capture_step, snapshot
from fusedopt import reference

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend")]

SIZES = (1, 3, 17, 1000, 65536, 65537, 300_001)


def _params(dtype=torch.float32, sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype=dtype, device=DEV)) for n in sizes]


def _grads(params, step, dtype=None):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen).to(dtype=dtype or p.dtype, device=DEV) for p in params]


def _clone(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _set(params, grads):
    for p, g in zip(params, grads):
        if g.dtype != p.dtype and hasattr(p, "grad_dtype"):
            p.grad_dtype = g.dtype
        p.grad = g.clone()


def _close(a, b, dtype, ulps):
    tol = ulps * ULP[dtype]
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (fusedopt.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
        (fusedopt.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
        (fusedopt.Adam, torch.optim.Adam, dict(lr=0.01, maximize=True, betas=(0.3, 0.9))),
        (fusedopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
        (fusedopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
        (fusedopt.SGD, torch.optim.SGD, dict(lr=0.05)),
    ],
)
def test_matches_torch_fused_cuda(dtype, ours, theirs, kwargs):
    base = _params(dtype)
    a, b = _clone(base), _clone(base)
    oa, ob = ours(a, **kwargs), theirs(b, fused=True, **kwargs)
    for step in range(4):
        g = _grads(base, step)
        _set(a, g)
        _set(b, g)
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        _close(x.detach(), y.detach(), dtype, 4 if dtype == torch.float32 else 2)


@requires_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_matches_fp64_and_the_cpu_kernels(dtype, amsgrad):
    base = _params(dtype)
    gpu = _clone(base)
    cpu = [torch.nn.Parameter(p.detach().cpu()) for p in base]
    f64 = [p.detach().double() for p in base]
    m = [torch.zeros_like(p) for p in f64]
    v = [torch.zeros_like(p) for p in f64]
    vm = [torch.zeros_like(p) for p in f64] if amsgrad else []
    steps = [torch.zeros((), dtype=torch.float32) for _ in f64]
    og = fusedopt.AdamW(gpu, lr=0.01, weight_decay=0.1, amsgrad=amsgrad)
    oc = fusedopt.AdamW(cpu, lr=0.01, weight_decay=0.1, amsgrad=amsgrad)
    for step in range(4):
        g = _grads(base, step)
        _set(gpu, g)
        _set(cpu, [x.cpu() for x in g])
        og.step()
        oc.step()
        reference.adam_(f64, [x.double().cpu() for x in g], m, v, vm, steps, [], 0.01, None, 0.9, 0.999, 1e-8,
                        0.1, True, amsgrad, False, None, None, None, 0.0)
        # storage rounds params and states to `dtype` every step
        for lst in (f64, m, v, vm):
            lst[:] = [x.to(dtype).double() for x in lst]
    for x, c, r in zip(gpu, cpu, f64):
        _close(x.detach().cpu(), c.detach(), dtype, 1)  # same rule, same order: at most a rounding apart
        _close(x.detach().cpu(), r, dtype, 16 if dtype == torch.float32 else 2)

@requires_cuda_kernels
def test_mixed_dtype_groups_and_fp32_grads_for_bf16_params():
    p32 = _params(torch.float32, seed=1)
    pbf = _params(torch.bfloat16, seed=2)
    pbf_g32 = _params(torch.bfloat16, seed=3)
    ph = _params(torch.float16, seed=4)
    all_params = p32 + pbf + pbf_g32 + ph
    cpu = [torch.nn.Parameter(p.detach().cpu()) for p in all_params]
    og = fusedopt.AdamW([{"params": p32}, {"params": pbf + pbf_g32, "lr": 0.02}, {"params": ph}], lr=0.01,
                        max_grad_norm=1.0)
    n1, n3 = len(p32), len(p32) + len(pbf) + len(pbf_g32)
    oc = fusedopt.AdamW([{"params": cpu[:n1]}, {"params": cpu[n1:n3], "lr": 0.02}, {"params": cpu[n3:]}], lr=0.01,
                        max_grad_norm=1.0)
    for step in range(3):
        g = _grads(p32, step) + _grads(pbf, step) + _grads(pbf_g32, step, torch.float32) + _grads(ph, step)
        _set(all_params, g)
        _set(cpu, [x.cpu() for x in g])
        og.step()
        oc.step()
        torch.testing.assert_close(og.last_grad_norm.cpu(), oc.last_grad_norm, rtol=1e-6, atol=0)
    for x, c in zip(all_params, cpu):
        _close(x.detach().cpu(), c.detach(), x.dtype, 1)


@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(amsgrad=True, max_grad_norm=1.0)),
    (fusedopt.SGD, dict(momentum=0.9, dampening=0.3, max_grad_norm=1.0)),
    (fusedopt.AdamW, dict(master_weights=True)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skipped_step_is_bit_identical(cls, kwargs, dtype):
    params = _params(dtype)
    opt = cls(params, lr=0.1, **kwargs)
    scaler = fusedopt.GradScaler(DEV, init_scale=8.0)
    for step, poison in enumerate([False, True, False, True]):
        g = _grads(params, step)
        if poison:
            g[-1][12345] = float("inf")
        opt.zero_grad()
        scaler.scale(sum((p.float() * x.float()).sum() for p, x in zip(params, g))).backward()
        before = snapshot(params, opt)
        scaler.step(opt)
        scaler.update()
        if poison:
            assert_unchanged(params, opt, before)

@requires_cuda_kernels
def test_a_tensor_over_2_to_31_elements():
    n = 2**31 + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 26 * 2**30:
        pytest.skip("needs ~26 GiB of free GPU memory")
    p = torch.nn.Parameter(torch.empty(n, dtype=torch.bfloat16, device=DEV).uniform_(-1, 1))
    p.grad = torch.empty_like(p).uniform_(-1, 1)
    probe = torch.cat([torch.arange(0, 5000), torch.arange(2**31 - 3000, 2**31 + 3000), torch.arange(n - 5000, n)]).to(DEV)
    p0, g0 = p.detach()[probe].clone(), p.grad[probe].clone()
    opt = fusedopt.AdamW([p], lr=0.01, weight_decay=0.1)
    opt.step()
    # the same update on the probed elements alone
    q = [p0.clone()]
    m, v, s = [torch.zeros_like(p0)], [torch.zeros_like(p0)], [torch.zeros((), device=DEV)]
    adam_op(q, [g0], m, v, [], s, lr=0.01, weight_decay=0.1)
    assert torch.equal(p.detach()[probe], q[0])
    assert torch.equal(opt.state[p]["exp_avg"][probe], m[0])


def test_cuda_graph_capture_and_replay_match_eager():
    base = _params(torch.float32, sizes=(1000, 65537, 3))
    eager, graphed = _clone(base), _clone(base)
    lr = torch.tensor(0.01, device=DEV)
    oe = fusedopt.AdamW(eager, lr=lr.clone(), max_grad_norm=1.0, capturable=True)
    og = fusedopt.AdamW(graphed, lr=lr, max_grad_norm=1.0, capturable=True)
    graph, static = capture_step(og, graphed, _grads(base, 0))
    _set(eager, _grads(base, 0))
    oe.step()
    for step in range(1, 6):
        grads = _grads(base, step)
        for g, x in zip(static, grads):
            g.copy_(x)
        graph.replay()
        _set(eager, grads)
        oe.step()
    torch.cuda.synchronize()
    for a, b in zip(graphed, eager):
        assert torch.equal(a.detach(), b.detach())
    for a, b in zip(graphed, eager):
        assert float(og.state[a]["step"]) == float(oe.state[b]["step"]) == 6


def _small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).to(DEV)


@pytest.mark.parametrize("idiom", [False, True])
def test_no_host_sync_in_the_step(idiom):
    model = _small_model()
    opt = fusedopt.AdamW(model.parameters(), lr=1e-3, max_grad_norm=None if idiom else 1.0)
    scaler = fusedopt.GradScaler(DEV)
    x = torch.randn(32, 64, device=DEV)

    def step():
        opt.zero_grad()
        with torch.autocast(DEV, dtype=torch.float16):
            loss = model(x).float().pow(2).mean()
        scaler.scale(loss).backward()
        torch.cuda.set_sync_debug_mode("error")
        try:
            if idiom:
                scaler.unscale_(opt)
                fusedopt.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    step()  # state is created on the first step
    step()
    step()


def _transformer():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True, dropout=0.0)
    return torch.nn.Sequential(torch.nn.TransformerEncoder(layer, num_layers=2), torch.nn.Linear(64, 64)).to(DEV)


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_autocast_training_tracks_torch(amp_dtype):
    data = [torch.randn(8, 16, 64, device=DEV, generator=None) for _ in range(4)]

    def train(fused):
        model = _transformer()
        if fused:
            opt = fusedopt.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, max_grad_norm=1.0)
            scaler = fusedopt.GradScaler(DEV)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
            scaler = torch.amp.GradScaler(DEV)
        losses = []
        for step in range(50):
            x = data[step % len(data)]
            opt.zero_grad()
            with torch.autocast(DEV, dtype=amp_dtype):
                loss = (model(x).float() - x).pow(2).mean()
            scaler.scale(loss).backward()
            if fused:
                scaler.step(opt)
            else:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
        return losses

    ours, theirs = train(True), train(False)
    assert theirs[-1] < 0.5 * theirs[0]  # the run does train
    for a, b in zip(ours, theirs):
        assert abs(a - b) <= 0.02 * abs(b) + 1e-3, (ours, theirs)
