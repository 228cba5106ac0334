"""torch.compile: fusedopt's step traces whole (fullgraph=True) into its ops,
equals the eager step, recompiles only when it must, and adds no graph break
to a compiled train step.

Most tests use backend="eager" or "aot_eager": dynamo's tracing (with fake
tensors through the ops' fake kernels) and AOT's functionalization are what
can break; inductor's code generation adds nothing to what these check and
costs tens of seconds on a small CI machine, so it runs in one test."""

import copy
import datetime
import os

import pytest
import torch
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

import fusedopt
from helpers import fp32_tol


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    grad_enabled = torch.is_grad_enabled()
    yield
    torch._dynamo.reset()
    # a compiled step that raises leaves the grad mode its graph set (the
    # graph's no_grad is undone at its end, which is not reached)
    torch.set_grad_enabled(grad_enabled)


def _tensor_kw(kw):
    """A fresh copy of tensor hyperparameters, so two optimizers share none."""
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.clone()
        elif isinstance(v, tuple) and isinstance(v[0], torch.Tensor):
            v = tuple(x.clone() for x in v)
        out[k] = v
    return out


def _params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7,), (3, 5), (64,), (2, 3, 4, 4)]
    ps = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    ps[3] = ps[3].contiguous(memory_format=torch.channels_last)
    return [torch.nn.Parameter(p) for p in ps]


CONFIGS = {
    "AdamW clip": (fusedopt.AdamW, dict(lr=0.01, max_grad_norm=1.0), torch.float32),
    "Adam amsgrad maximize L2": (fusedopt.Adam, dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.1),
                                 torch.float32),
    "AdamW tensor lr and betas": (fusedopt.AdamW, dict(lr=torch.tensor(0.01), betas=(torch.tensor(0.9),
                                                                                      torch.tensor(0.99))),
                                  torch.float32),
    "AdamW bf16 masters bf16 moments clip": (fusedopt.AdamW, dict(lr=0.01, master_weights=True,
                                                                  state_dtype=torch.bfloat16, max_grad_norm=0.5),
                                             torch.bfloat16),
    "AdamW float64 (reference path) clip": (fusedopt.AdamW, dict(lr=0.01, max_grad_norm=1.0), torch.float64),
    "SGD nesterov clip": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, max_grad_norm=1.0),
                          torch.float32),
    "SGD tensor lr dampening maximize L2": (fusedopt.SGD, dict(lr=torch.tensor(0.1), momentum=0.9, dampening=0.1,
                                                               maximize=True, weight_decay=0.01), torch.float32),
    "SGD plain": (fusedopt.SGD, dict(lr=0.1), torch.float32),
    "SGD bf16 masters": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, master_weights=True), torch.bfloat16),
    "Adagrad tensor lr decay L2 clip": (fusedopt.Adagrad, dict(lr=torch.tensor(0.05), lr_decay=0.01, weight_decay=0.1,
                                                               max_grad_norm=1.0), torch.float32),
    "Lion bf16 masters clip by value": (fusedopt.Lion, dict(lr=0.01, weight_decay=0.1, master_weights=True,
                                                            max_grad_value=0.5), torch.bfloat16),
}


def _assert_same(pa, pb, oa, ob):
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a.detach(), b.detach(), **fp32_tol())
        sa, sb = oa.state.get(a, {}), ob.state.get(b, {})
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], **fp32_tol())


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fullgraph_step_equals_eager(name, backend):
    if backend == "aot_eager" and name not in ("AdamW clip", "SGD nesterov clip", "AdamW float64 (reference path) clip"):
        pytest.skip("aot_eager runs on a few configs; eager tracing covers the option grid")
    cls, kw, dtype = CONFIGS[name]
    pa, pb = _params(dtype), _params(dtype)
    oa, ob = cls(pa, **_tensor_kw(kw)), cls(pb, **_tensor_kw(kw))
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(oa.step, fullgraph=True, backend=counter)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(pa, pb):
            g = torch.randn(a.shape, generator=gen).to(dtype)
            a.grad, b.grad = g.clone(), g.clone()
        step()
        ob.step()
    _assert_same(pa, pb, oa, ob)
    if kw.get("max_grad_norm"):
        torch.testing.assert_close(oa.last_grad_norm, ob.last_grad_norm, **fp32_tol())
    # state is made eagerly while the first step is traced: one graph serves every step
    assert counter.frame_count == 1


def _run_scheduled(lr, steps=6):
    params = _params()
    opt = fusedopt.AdamW(params, lr=lr, max_grad_norm=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    counter = CompileCounter()
    # The scheduler wraps opt.step in a function of a file dynamo skips, so no
    # fullgraph=True here: that wrapper runs eagerly, and the step inside it is
    # compiled as its own frame, whose graphs the counter counts (a graph break
    # in the step would show as more than one).
    step = torch.compile(opt.step, backend=counter)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn_like(p)
        step()
        sched.step()
    return counter.frame_count, params


def test_tensor_lr_changed_by_a_scheduler_never_recompiles():
    frames, _ = _run_scheduled(torch.tensor(0.01))
    assert frames == 1


def test_float_lr_changed_by_a_scheduler_recompiles_once():
    """The first change makes dynamo treat the float as an input; the step then
    hands it to the op as a tensor, so later changes reuse that graph (passed as
    a float argument it would recompile for every value)."""
    frames, _ = _run_scheduled(0.01, steps=8)
    assert frames == 2


@pytest.mark.parametrize("lr", [0.01, torch.tensor(0.01)], ids=["float lr", "tensor lr"])
def test_scheduled_compiled_steps_equal_eager(lr):
    torch.manual_seed(3)
    _, compiled = _run_scheduled(lr if isinstance(lr, float) else lr.clone())
    torch.manual_seed(3)
    params = _params()
    opt = fusedopt.AdamW(params, lr=lr if isinstance(lr, float) else lr.clone(), max_grad_norm=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    for _ in range(6):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    for a, b in zip(compiled, params):
        torch.testing.assert_close(a, b, **fp32_tol())


@pytest.mark.parametrize("cls,kw", [(fusedopt.AdamW, dict(lr=0.01, max_grad_norm=1.0)),
                                    (fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True))], ids=["AdamW", "SGD"])
def test_compiled_reference_path_is_the_eager_one_bit_for_bit(cls, kw):
    """float64 params (the reference path) and a float lr that a scheduler
    changes: the traced torch ops are the eager ones (backend="eager"; no op
    that dynamo rewrites with other rounding), with one recompile."""
    pa, pb = _params(torch.float64), _params(torch.float64)
    oa, ob = cls(pa, **kw), cls(pb, **kw)
    sa, sb = (torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (s + 1)) for o in (oa, ob))
    counter = CompileCounter()
    step = torch.compile(oa.step, backend=counter)
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        for a, b in zip(pa, pb):
            g = torch.randn(a.shape, generator=gen, dtype=torch.float64)
            a.grad, b.grad = g.clone(), g.clone()
        step()
        ob.step()
        sa.step()
        sb.step()
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
    assert counter.frame_count == 2


@pytest.mark.parametrize("cls,kw", [(fusedopt.AdamW, dict(lr=0.01, max_grad_norm=1.0)),
                                    (fusedopt.SGD, dict(lr=0.1, momentum=0.9))], ids=["AdamW", "SGD"])
def test_changes_between_compiled_steps_are_seen(cls, kw):
    """The guards stand in for the eager plan's checks: a reset state, a None
    grad, a loaded checkpoint and a new param group all take effect."""
    pa, pb = _params(), _params()
    oa, ob = cls(pa, **kw), cls(pb, **kw)
    step = torch.compile(oa.step, fullgraph=True, backend="eager")
    gen = torch.Generator().manual_seed(2)

    def both(none=None):
        for i, (a, b) in enumerate(zip(pa, pb)):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = (None, None) if i == none else (g.clone(), g.clone())
        step()
        ob.step()
        _assert_same(pa, pb, oa, ob)

    both()
    both()
    oa.state.clear()
    ob.state.clear()
    both()
    both(none=1)
    saved = copy.deepcopy(ob.state_dict())
    both()
    oa.load_state_dict(copy.deepcopy(saved))
    ob.load_state_dict(saved)
    with torch.no_grad():
        for a, b in zip(pa, pb):
            a.copy_(b)
    both()
    extra_a, extra_b = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(5))
    oa.add_param_group({"params": [extra_a], "lr": 0.05})
    ob.add_param_group({"params": [extra_b], "lr": 0.05})
    pa.append(extra_a)
    pb.append(extra_b)
    both()


SCALERS = {"fusedopt.GradScaler": fusedopt.GradScaler, "torch.amp.GradScaler": torch.amp.GradScaler}


@pytest.mark.parametrize("clip", [None, 1.0], ids=["no clip", "clip"])
@pytest.mark.parametrize("scaler_name", list(SCALERS))
def test_compiled_step_driven_by_a_grad_scaler(scaler_name, clip):
    """opt.step replaced by its compiled version; the scaler drives it (its own
    update is torch's), with an inf step that must be skipped."""

    def run(compiled):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        opt = fusedopt.AdamW(model.parameters(), lr=0.01, max_grad_norm=clip)
        counter = CompileCounter()
        if compiled:
            opt.step = torch.compile(opt.step, fullgraph=True, backend=counter)
        scaler = SCALERS[scaler_name]("cpu", init_scale=2.0**10, growth_interval=2)
        gen = torch.Generator().manual_seed(1)
        for s in range(6):
            loss = model(torch.randn(4, 6, generator=gen)).square().mean()
            if s == 2:
                loss = loss * float("inf")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        return model, opt, scaler, counter.frame_count

    ma, oa, sa, frames = run(True)
    mb, ob, sb, _ = run(False)
    for a, b in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(a, b, **fp32_tol())
    assert sa.get_scale() == sb.get_scale()
    assert [float(oa.state[p]["step"]) for p in ma.parameters()] == [5.0, 5.0]
    assert frames == 1


def _break_report(opt_factory, scaler_cls=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = opt_factory(model.parameters())
    scaler = scaler_cls("cpu") if scaler_cls else None
    x = torch.randn(4, 8)

    def train_step(x):
        loss = model(x).square().mean()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        opt.zero_grad()
        return loss

    train_step(x)  # the state exists, as in any loop after its first step
    return torch._dynamo.explain(train_step)(x)


@pytest.mark.parametrize("scaler", [None, "torch.amp.GradScaler", "fusedopt.GradScaler"])
def test_train_step_has_no_graph_break_from_fusedopt(scaler):
    """Against torch.optim.AdamW (with torch's scaler where there is one): no
    more breaks, and none whose stack is in fusedopt."""
    ours = _break_report(lambda ps: fusedopt.AdamW(ps, lr=0.01, max_grad_norm=1.0), SCALERS.get(scaler))
    theirs = _break_report(lambda ps: torch.optim.AdamW(ps, lr=0.01), torch.amp.GradScaler if scaler else None)
    assert ours.graph_break_count <= theirs.graph_break_count
    package = os.path.dirname(os.path.abspath(fusedopt.__file__))
    for reason in ours.break_reasons:
        for frame in reason.user_stack:
            assert not os.path.abspath(frame.filename).startswith(package), reason.reason


@pytest.mark.parametrize("scaler_name", list(SCALERS))
def test_compiled_train_step_with_a_scaler_equals_eager(scaler_name):
    """The whole train step compiled (forward, scaled backward, scaler.step,
    scaler.update, zero_grad), with an inf step: the scaler's requests reach
    the traced step, and the result is eager's."""

    def run(compiled):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = fusedopt.AdamW(model.parameters(), lr=0.01, max_grad_norm=1.0)
        scaler = SCALERS[scaler_name]("cpu", init_scale=2.0**10, growth_interval=2)

        def train_step(x, factor):
            loss = model(x).square().mean() * factor
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()

        step = torch.compile(train_step, backend="eager") if compiled else train_step
        gen = torch.Generator().manual_seed(1)
        for s in range(6):
            step(torch.randn(4, 8, generator=gen), torch.tensor(float("inf") if s == 2 else 1.0))
        return model, opt, scaler

    (ma, oa, sa), (mb, ob, sb) = run(True), run(False)
    for a, b in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(a, b, **fp32_tol())
        assert float(oa.state[a]["step"]) == float(ob.state[b]["step"]) == 5.0
    assert sa.get_scale() == sb.get_scale()


@pytest.mark.slow
def test_inductor_amp_step_equals_eager():
    """The one inductor run: AOT's functionalization of the mutating ops and
    inductor's re-inplacing, with fusedopt's scaler and an inf step."""

    def run(compiled):
        params = _params()
        opt = fusedopt.AdamW(params, lr=0.01, max_grad_norm=1.0)
        if compiled:
            opt.step = torch.compile(opt.step, fullgraph=True)
        scaler = fusedopt.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
        gen = torch.Generator().manual_seed(1)
        for s in range(5):
            loss = sum((p * torch.randn(p.shape, generator=gen)).sum() for p in params)
            scaler.scale(loss * float("inf") if s == 1 else loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        return params, opt, scaler

    pa, oa, sa = run(True)
    pb, ob, sb = run(False)
    _assert_same(pa, pb, oa, ob)
    torch.testing.assert_close(oa.last_grad_norm, ob.last_grad_norm, **fp32_tol())
    assert sa.get_scale() == sb.get_scale()


def test_a_grad_whose_layout_changes_after_compilation_is_never_misread():
    """Grads are not guarded beyond None-ness (dynamo's rule for optimizers): a
    transposed grad reaches the compiled step. The native kernels refuse it;
    the reference path computes with it correctly."""
    pa = [torch.nn.Parameter(torch.randn(4, 6))]
    pb = [torch.nn.Parameter(pa[0].detach().clone())]
    oa, ob = fusedopt.AdamW(pa, lr=0.01), fusedopt.AdamW(pb, lr=0.01)
    step = torch.compile(oa.step, fullgraph=True, backend="eager")
    g = torch.randn(4, 6)
    pa[0].grad, pb[0].grad = g.clone(), g.clone()
    step()
    ob.step()
    g = torch.randn(6, 4).t()
    pa[0].grad, pb[0].grad = g.clone(memory_format=torch.preserve_format), g.clone(memory_format=torch.preserve_format)
    before = pa[0].detach().clone()
    try:
        step()
    except RuntimeError as e:
        assert "laid out" in str(e)
        assert torch.equal(pa[0].detach(), before)
        return
    ob.step()
    _assert_same(pa, pb, oa, ob)


@pytest.mark.slow
def test_a_grad_that_changes_dtype_after_compilation_raises():
    """dynamo guards an optimizer's grads only for None-ness, and inductor's code
    reads a grad with its traced dtype: the reference path checks the dtypes
    at run time and raises rather than read float32 grads as float64 ones
    (the native ops check their arguments themselves)."""
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))  # float64: the reference path
    opt = fusedopt.AdamW([p], lr=0.01, max_grad_norm=1.0)
    step = torch.compile(opt.step, fullgraph=True)
    p.grad = torch.randn(5, dtype=torch.float64)
    step()
    p.grad = None
    p.grad_dtype = torch.float32
    p.grad = torch.randn(5)
    before = p.detach().clone()
    # the check in the graph raises, or (torch 2.13, whose guards now see the
    # change through the step's validation) dynamo's recompilation refuses it
    with pytest.raises(RuntimeError, match="changed dtype after the step was compiled|grad_dtype"):
        step()
    assert torch.equal(p.detach(), before)


@pytest.fixture
def one_rank_mesh():
    """A 1-rank gloo job on 127.0.0.1 and its CPU mesh, torn down afterwards
    (other tests expect torch.distributed uninitialized)."""
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _dtensor_pair(mesh, dtype=torch.float32, **kw):
    from torch.distributed.tensor import Shard, distribute_tensor

    def make():
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(distribute_tensor(torch.randn(8, 4, dtype=dtype), mesh, [Shard(0)]))
              for _ in range(2)]
        return ps, fusedopt.AdamW(ps, lr=0.01, max_grad_norm=1.0, **kw)

    return make(), make()


def _dtensor_steps(mesh, pa, pb, step, ob, steps=3):
    from torch.distributed.tensor import Shard, distribute_tensor

    for _ in range(steps):
        for a, b in zip(pa, pb):
            g = distribute_tensor(torch.randn(8, 4, dtype=a.dtype), mesh, [Shard(0)])
            a.grad, b.grad = g, g.clone()  # new grad DTensors every step, as FSDP2 makes
        step()
        ob.step()
    for a, b in zip(pa, pb):
        assert torch.equal(a.full_tensor(), b.full_tensor())


def test_dtensor_params_compile_fullgraph(one_rank_mesh):
    """DTensor params take the compiled route: one graph (fullgraph=True) over
    their local shards, whose norm is all-reduced inside it, equal to the eager
    step bit for bit (2 ranks of FSDP2: tests/dist_compile.py)."""
    (pa, oa), (pb, ob) = _dtensor_pair(one_rank_mesh)
    counter = CompileCounter()
    step = torch.compile(oa.step, backend=counter, fullgraph=True)
    _dtensor_steps(one_rank_mesh, pa, pb, step, ob)
    assert counter.frame_count == 1
    assert torch.equal(oa.last_grad_norm, ob.last_grad_norm)
    # no grad on this rank: it still joins its mesh's all-reduce (other ranks
    # may have grads), and nothing is written
    before = [a.full_tensor().clone() for a in pa]
    for a in pa:
        a.grad = None
    step()
    assert all(torch.equal(a.full_tensor(), b) for a, b in zip(pa, before))


def test_dtensor_params_with_8bit_states_run_the_step_eagerly_under_compile(one_rank_mesh):
    """8-bit states of DTensor params are not taken by the compiled route: the
    step leaves the graph (a graph break) and runs eagerly, equal to the eager
    step; with fullgraph=True that break is an error, never a wrong graph."""
    (pa, oa), (pb, ob) = _dtensor_pair(one_rank_mesh, state_dtype="8bit", min_8bit_size=0)
    _dtensor_steps(one_rank_mesh, pa, pb, torch.compile(oa.step, backend="eager"), ob)
    assert oa.state[pa[0]]["exp_avg"].dtype == torch.uint8
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(oa.step, backend="eager", fullgraph=True)()


def test_dtensor_params_with_stochastic_rounding_run_the_step_eagerly_under_compile(one_rank_mesh):
    """bf16 DTensor params stored with stochastic rounding, whose bits are keyed
    by each shard's global offset, are not taken by the compiled route either:
    the step runs eagerly, bit for bit the eager step's (same seed, same keys);
    with fullgraph=True the break is an error, never a wrong graph."""
    (pa, oa), (pb, ob) = _dtensor_pair(one_rank_mesh, dtype=torch.bfloat16, stochastic_rounding=True, seed=7)
    before = [a.full_tensor().clone() for a in pa]
    _dtensor_steps(one_rank_mesh, pa, pb, torch.compile(oa.step, backend="eager"), ob)
    assert all(not torch.equal(a.full_tensor(), b) for a, b in zip(pa, before))  # it stepped
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(oa.step, backend="eager", fullgraph=True)()
