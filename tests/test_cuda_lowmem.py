"""8-bit states and stochastic rounding on a GPU: the optimizers route CUDA
params with them to the CUDA kernels (csrc/cuda/rule_kernel_q8.cuh,
rounded_store.cuh), which give the CPU kernels' bits (the same quantization
arithmetic, the same Philox words per global element index; see
tests/cuda_common.py for what is bitwise between the two), keep codes, scales,
params and rounding keys through a skipped AMP step, and replay under a CUDA
graph as they run eagerly. Under the CPU emulation the same kernels are checked
in tests/test_cuda_emulated_state_8bit.py and test_cuda_emulated_sr.py; this
file is what a GPU adds: nvcc's code, real warps and shared memory.

Every test here carries the `cuda` marker and is skipped without a GPU."""


import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import DEV, assert_unchanged, capture_step, snapshot

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend"), requires_cuda_kernels]

# whole and partial quant blocks, one tensor below min_8bit_size, one over a
# CUDA chunk, one that starts mid-block of the global index (SR offsets)
SIZES = (3, 1000, 65537, 300_001)
RULES = [
    (fusedopt.AdamW, {"weight_decay": 0.1}),
    (fusedopt.Adam, {"amsgrad": True}),
    (fusedopt.SGD, {"momentum": 0.9, "nesterov": True}),
    (fusedopt.Adagrad, {"weight_decay": 0.01}),
    (fusedopt.Lion, {"weight_decay": 0.1}),
]
IDS = [f"{c.__name__}-{'-'.join(k)}" for c, k in RULES]


def _params(dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype).to(device)) for n in SIZES]


def _grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen).to(p.dtype).to(p.device) for p in params]


def _train(cls, kw, opts, dtype, device, steps=4):
    params = _params(dtype, device)
    opt = cls(params, lr=1e-2, **kw, **opts)
    for step in range(steps):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    return params, opt


def _same_bits(a, b):
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_floating_point():
        width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.view(width), b.view(width)
    return torch.equal(a, b)


def _assert_runs_match(gpu, cpu):
    (pg, og), (pc, oc) = gpu, cpu
    torch.cuda.synchronize()
    for i, (p, q) in enumerate(zip(pg, pc)):
        assert _same_bits(p, q), f"param {i}"
        assert og.state[p].keys() == oc.state[q].keys()
        for key, value in oc.state[q].items():
            assert _same_bits(og.state[p][key], value), f"param {i}: {key}"


@pytest.mark.parametrize("cls,kw", RULES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_8bit_states_match_the_cpu_kernels(cls, kw, dtype):
    opts = {"state_dtype": "8bit", "min_8bit_size": 256}
    gpu = _train(cls, kw, opts, dtype, DEV)
    assert gpu[1].step_backends() == {"cuda": len(SIZES)}  # not the plain-torch reference
    assert any(v.dtype is torch.uint8 for v in gpu[1].state[gpu[0][1]].values())
    _assert_runs_match(gpu, _train(cls, kw, opts, dtype, "cpu"))


@pytest.mark.parametrize("cls,kw", RULES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("state_dtype", [None, "8bit"])
def test_stochastic_rounding_matches_the_cpu_kernels(cls, kw, dtype, state_dtype):
    opts = {"stochastic_rounding": True, "seed": 11, "max_grad_value": 0.5}
    if state_dtype:
        opts.update(state_dtype=state_dtype, min_8bit_size=256)
    gpu = _train(cls, kw, opts, dtype, DEV)
    assert gpu[1].step_backends() == {"cuda": len(SIZES)}
    _assert_runs_match(gpu, _train(cls, kw, opts, dtype, "cpu"))
    key = gpu[1].state[gpu[0][0]]["rounding_key"]
    assert key.device.type == "cuda" and key[1].item() == 4


@pytest.mark.parametrize("opts", [{"state_dtype": "8bit", "min_8bit_size": 256},
                                  {"state_dtype": "8bit", "min_8bit_size": 256, "stochastic_rounding": True}],
                         ids=["8bit", "8bit-sr"])
def test_skipped_amp_step_keeps_everything(opts):
    params = _params(torch.bfloat16, DEV)
    opt = fusedopt.AdamW(params, lr=1e-2, max_grad_norm=1.0, **opts)
    scaler = fusedopt.GradScaler(DEV, init_scale=8.0)
    for step, poison in enumerate([False, True, False, True]):
        g = _grads(params, step)
        if poison:
            g[2][4567] = float("inf")
        opt.zero_grad()
        scaler.scale(sum((p.float() * x.float()).sum() for p, x in zip(params, g))).backward()
        before = snapshot(params, opt)
        scaler.step(opt)
        scaler.update()
        if poison:
            assert_unchanged(params, opt, before)


def test_cuda_graph_replay_matches_eager():
    """Codes, scales and rounding keys all live on the device: a captured step
    replays as the eager steps run, the keys advancing on every replay."""
    opts = dict(lr=torch.tensor(0.01, device=DEV), capturable=True, state_dtype="8bit", min_8bit_size=256,
                stochastic_rounding=True, seed=3, max_grad_norm=1.0)
    base = _params(torch.bfloat16, DEV)
    eager = [torch.nn.Parameter(p.detach().clone()) for p in base]
    graphed = [torch.nn.Parameter(p.detach().clone()) for p in base]
    oe = fusedopt.AdamW(eager, **{**opts, "lr": opts["lr"].clone()})
    og = fusedopt.AdamW(graphed, **opts)
    graph, static = capture_step(og, graphed, _grads(base, 0))
    for p, g in zip(eager, _grads(base, 0)):
        p.grad = g
    oe.step()
    for step in range(1, 5):
        grads = _grads(base, step)
        for g, x in zip(static, grads):
            g.copy_(x)
        graph.replay()
        for p, g in zip(eager, grads):
            p.grad = g
        oe.step()
    _assert_runs_match((graphed, og), (eager, oe))
    assert og.state[graphed[0]]["rounding_key"][1].item() == 5
