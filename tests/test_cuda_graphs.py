"""CUDA graphs and torch.compile on a GPU: the step captured with
torch.cuda.graph and by torch.compile(mode="reduce-overhead"), replayed with a
changing tensor lr and with skipped (inf) steps, on the native kernels and on
the reference path; and the reference path without host syncs.

Every test here carries the `cuda` marker and is skipped without a GPU. (Two
graphs sharing one grad_stats workspace are tests/test_cuda.py's.)"""

import pytest
import torch

import fusedopt
from fusedopt import reference

# cuda_backend: cuda:0 is served by the backend this run asks for (the kernels, or the
# reference under FUSEDOPT_DISABLE_NATIVE), so a failed CUDA library cannot pass these
pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend")]

DEV = "cuda"
SIZES = (1000, 65537, 3)


def _params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype=dtype, device=DEV)) for n in SIZES]


def _clone(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen).to(dtype=p.dtype, device=DEV) for p in params]


def _steps(opt, params):
    return [float(opt.state[p]["step"]) for p in params]


class _Graphed:
    """opt.step() captured in a torch.cuda.graph, fed through static grads.

    The first step runs eagerly on a side stream (it creates the state), as
    torch's CUDA-graph recipe for optimizers does; `found_inf`/`grad_scale`
    tensors, if given, are the AMP protocol's, set for the capture and kept."""

    def __init__(self, opt, params, first_grads, *, found_inf=None, grad_scale=None):
        self.opt = opt
        self.static = [g.clone() for g in first_grads]
        for p, g in zip(params, self.static):
            p.grad = g
        if found_inf is not None:
            opt.found_inf = found_inf
            opt.grad_scale = grad_scale
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            opt.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            opt.step()

    def step(self, grads):
        for g, x in zip(self.static, grads):
            g.copy_(x)
        self.graph.replay()


def _eager_step(opt, params, grads, found_inf=None, grad_scale=None):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    if found_inf is not None:
        opt.found_inf = found_inf
        opt.grad_scale = grad_scale
    opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["native", "reference"])
def test_graph_replays_follow_a_changing_lr_and_skip_inf_steps(dtype):
    """lr changed in place between replays; found_inf set on one replay (the
    torch.amp protocol): that replay changes nothing, step counters included;
    last_grad_norm after each replay is eager's."""
    base = _params(dtype)
    graphed, eager = _clone(base), _clone(base)
    lr_g, lr_e = torch.tensor(0.01, device=DEV), torch.tensor(0.01, device=DEV)
    og = fusedopt.AdamW(graphed, lr=lr_g, max_grad_norm=1.0, capturable=True)
    oe = fusedopt.AdamW(eager, lr=lr_e, max_grad_norm=1.0, capturable=True)
    found_g, found_e = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
    scale_g, scale_e = torch.full((), 4.0, device=DEV), torch.full((), 4.0, device=DEV)
    g = _Graphed(og, graphed, _grads(base, 0), found_inf=found_g, grad_scale=scale_g)
    _eager_step(oe, eager, _grads(base, 0), found_e, scale_e)
    for step in range(1, 7):
        lr = 0.01 / step
        lr_g.fill_(lr)
        lr_e.fill_(lr)
        skip = step == 3
        found_g.fill_(float(skip))
        found_e.fill_(float(skip))
        before = [p.detach().clone() for p in graphed]
        steps_before = _steps(og, graphed)
        grads = _grads(base, step)
        g.step(grads)
        _eager_step(oe, eager, grads, found_e, scale_e)
        torch.cuda.synchronize()
        if skip:
            assert _steps(og, graphed) == steps_before
            for a, b in zip(graphed, before):
                assert torch.equal(a.detach(), b)
        else:
            assert _steps(og, graphed) == [s + 1 for s in steps_before]
        torch.testing.assert_close(og.last_grad_norm, oe.last_grad_norm, rtol=0, atol=0)
        for a, b in zip(graphed, eager):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
    assert _steps(og, graphed) == _steps(oe, eager) == [6.0] * len(SIZES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["native", "reference"])
def test_sgd_first_step_flag_inside_a_graph(dtype):
    """The buffer starts as a copy of the first *applied* grad: skipped
    replays leave it (zeros) and the flag alone; the first applied replay
    copies the grad (dampening would halve it otherwise); later ones follow
    torch.optim.SGD."""
    base = _params(dtype)
    graphed, ref = _clone(base), _clone(base)
    kw = dict(momentum=0.9, dampening=0.5)
    lr = torch.tensor(0.1, device=DEV)
    og = fusedopt.SGD(graphed, lr=lr, **kw)
    ot = torch.optim.SGD(ref, lr=0.1, foreach=False, **kw)
    found = torch.ones(1, device=DEV)  # the warm-up step (state creation) is skipped
    g = _Graphed(og, graphed, _grads(base, 0), found_inf=found, grad_scale=None)
    for step in range(1, 6):
        applied = step >= 3
        found.fill_(0.0 if applied else 1.0)
        grads = _grads(base, step)
        g.step(grads)
        torch.cuda.synchronize()
        bufs = [og.state[p]["momentum_buffer"] for p in graphed]
        if not applied:
            for buf, p, p0 in zip(bufs, graphed, base):
                assert torch.equal(buf, torch.zeros_like(buf))
                assert torch.equal(p.detach(), p0.detach())
            continue
        for p, x in zip(ref, grads):
            p.grad = x.clone()
        ot.step()
        if step == 3:
            for buf, x in zip(bufs, grads):
                assert torch.equal(buf, x)
        for a, b in zip(graphed, ref):
            torch.testing.assert_close(a.detach(), b.detach())
            torch.testing.assert_close(og.state[a]["momentum_buffer"], ot.state[b]["momentum_buffer"])


def _recorded_cuda_graphs(device_index=0) -> int:
    """CUDA graphs inductor's cudagraph trees have recorded on the device."""
    from torch._inductor.cudagraph_trees import get_manager

    manager = get_manager(device_index, create_if_none_exists=False)
    if manager is None:
        return 0

    def count(nodes):
        return sum(1 + count([c for cs in n.children.values() for c in cs]) for n in nodes)

    return count([n for ns in manager.roots.values() for n in ns])


@pytest.mark.parametrize("scaler_cls", [fusedopt.GradScaler, torch.amp.GradScaler], ids=["fusedopt", "torch"])
def test_reduce_overhead_step_with_a_grad_scaler(scaler_cls):
    """torch.compile(mode="reduce-overhead"): the step (AMP, clip, tensor lr)
    is recorded once as a CUDA graph and replayed; a changing lr and an inf
    step are followed; no host sync in the step; results are eager's."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def run(compiled, steps=8, inf_step=5):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).to(DEV)
        lr = torch.tensor(1e-3, device=DEV)
        opt = fusedopt.AdamW(model.parameters(), lr=lr, max_grad_norm=1.0)
        if compiled:
            opt.step = torch.compile(opt.step, mode="reduce-overhead", fullgraph=True)
        scaler = scaler_cls(DEV, init_scale=2.0**12, growth_interval=2)
        gen = torch.Generator(device=DEV).manual_seed(1)
        norms, counts = [], []
        for s in range(steps):
            torch.compiler.cudagraph_mark_step_begin()
            lr.fill_(1e-3 / (s + 1))
            x = torch.randn(32, 64, device=DEV, generator=gen)
            loss = model(x).float().pow(2).mean()
            if s == inf_step:
                loss = loss * float("inf")
            scaler.scale(loss).backward()
            if compiled and s >= 3:  # recording (first calls) may sync; replays must not
                torch.cuda.set_sync_debug_mode("error")
            try:
                scaler.step(opt)
                scaler.update()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            norms.append(opt.last_grad_norm.clone())  # a graph output: the next replay overwrites it
            opt.zero_grad()
            counts.append(_steps(opt, list(model.parameters())))
        return model, scaler, norms, counts

    mc, sc, norms_c, counts_c = run(True)
    assert torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert _recorded_cuda_graphs() == 1
    me, se, norms_e, counts_e = run(False)
    for a, b in zip(mc.parameters(), me.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(norms_c, norms_e):
        torch.testing.assert_close(a, b, equal_nan=True)  # the inf step's norm is inf/nan in both
    assert sc.get_scale() == se.get_scale()
    assert counts_c == counts_e
    assert counts_c[5] == counts_c[4]  # the inf step advanced no counter
    assert counts_c[-1] == [7.0] * len(counts_c[-1])
    torch._dynamo.reset()


def test_reference_path_never_syncs():
    """float64 params take the reference path on a GPU too (and so do Adam's
    betas given as CUDA tensors): tensor lr, AMP protocol, clipping, SGD's
    first-step flag, all without a host sync."""
    f64, f32 = _params(torch.float64), _params(torch.float32)
    betas = (torch.tensor(0.9, device=DEV), torch.tensor(0.99, device=DEV))
    for cls, kw, base in ((fusedopt.AdamW, dict(max_grad_norm=1.0, amsgrad=True), f64),
                          (fusedopt.SGD, dict(momentum=0.9, nesterov=True, max_grad_norm=1.0), f64),
                          (fusedopt.AdamW, dict(betas=betas, max_grad_norm=1.0), f32)):
        params = _clone(base)
        opt = cls(params, lr=torch.tensor(0.01, device=DEV), **kw)
        for step in range(3):
            for p, g in zip(params, _grads(base, step)):
                p.grad = g
            opt.grad_scale = torch.full((), 2.0, device=DEV)
            opt.found_inf = torch.full((1,), float(step == 1), device=DEV)
            torch.cuda.set_sync_debug_mode("error")
            try:
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    grads = _grads(base, 0)
    found, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
    torch.cuda.set_sync_debug_mode("error")
    try:
        reference.grad_stats_(grads, torch.full((), 2.0, device=DEV), found, sumsq)
        reference.unscale_(grads, found, torch.full((), 0.5, device=DEV))
    finally:
        torch.cuda.set_sync_debug_mode("default")
