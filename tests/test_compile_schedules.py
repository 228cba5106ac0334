"""torch.compile with schedulers that change betas and momentum on every step
(OneCycleLR(cycle_momentum=True)): after dynamo's first change of a float
(one recompile, which turns the floats into graph inputs, as for lr) the
compiled step never recompiles, and its result is the eager step's bit for
bit (the kernels read the same doubles, from a float64 tensor under compile:
fusedopt/optim/_compile.py hyper_args)."""

import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import fusedopt
from conftest import requires_native_cpu

STEPS = 7

CONFIGS = {
    "Adam": (fusedopt.Adam, dict(lr=0.01)),
    "AdamW clip amsgrad": (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True, max_grad_norm=1.0)),
    "SGD momentum": (fusedopt.SGD, dict(lr=0.1, momentum=0.9)),
    "SGD nesterov L2": (fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, dampening=0.0)),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _one_cycle(opt):
    with warnings.catch_warnings():
        # the compiled step was made from opt.step before the scheduler wrapped
        # it, so the scheduler cannot see the optimizer step and warns
        warnings.simplefilter("ignore", UserWarning)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS + 1, cycle_momentum=True,
                                                   base_momentum=0.8, max_momentum=0.95)


def _scheduled_value(opt):
    group = opt.param_groups[0]
    return group["betas"][0] if "betas" in group else group["momentum"]


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(7,), (3, 5), (64,), (2, 3, 4, 4)]]


def _assert_equal(pa, pb, oa, ob):
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
        sa, sb = oa.state.get(a, {}), ob.state.get(b, {})
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def _grads(params, gen):
    return [torch.randn(p.shape, generator=gen) for p in params]


# AOT backends with the plain-torch fallback still recompile for every lr value:
# its ops take lr as a float that AOT cannot turn into a tensor input (left for
# later; the native route hands the kernels tensors: _compile.float64_input)
@pytest.mark.parametrize("backend", ["eager", pytest.param("aot_eager", marks=requires_native_cpu)])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_one_cycle_momentum_compiled_step_never_recompiles_after_the_first_change(name, backend):
    cls, kw = CONFIGS[name]
    pa, pb = _params(), _params()
    oa, ob = cls(pa, **kw), cls(pb, **kw)
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(oa.step, fullgraph=True, backend=counter)
    sa, sb = _one_cycle(oa), _one_cycle(ob)
    gen = torch.Generator().manual_seed(1)
    seen = []
    for i in range(STEPS):
        for a, b, g in zip(pa, pb, _grads(pa, gen)):
            a.grad, b.grad = g.clone(), g.clone()
        seen.append(_scheduled_value(oa))
        if i >= 2:
            # the second step recompiled once (its floats became inputs); no more
            with torch._dynamo.config.patch(error_on_recompile=True):
                step()
        else:
            step()
        ob.step()
        sa.step()
        sb.step()
    # the scheduler did change beta1 / momentum on every step
    assert all(a != b for a, b in zip(seen, seen[1:])), seen
    assert counter.frame_count == 2
    _assert_equal(pa, pb, oa, ob)


@pytest.mark.parametrize("name", ["AdamW clip amsgrad", "SGD nesterov L2"])
def test_one_cycle_momentum_in_a_compiled_train_step(name):
    """The optimizer step inside a compiled train step (forward, backward,
    step, scheduler, zero_grad): no recompile after the first change, and
    eager's result bit for bit."""
    cls, kw = CONFIGS[name]

    def run(compiled):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = cls(model.parameters(), **kw)
        sched = _one_cycle(opt)

        def train_step(x):
            loss = model(x).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss

        counter = CompileCounterWithBackend("eager")
        step = torch.compile(train_step, backend=counter) if compiled else train_step
        gen = torch.Generator().manual_seed(1)
        for i in range(STEPS):
            with torch._dynamo.config.patch(error_on_recompile=compiled and i >= 2):
                step(torch.randn(4, 8, generator=gen))
            sched.step()
        return model, opt, counter.frame_count

    (ma, oa, frames), (mb, ob, _) = run(True), run(False)
    assert frames > 0
    _assert_equal(list(ma.parameters()), list(mb.parameters()), oa, ob)


@requires_native_cpu  # the native route is what it checks
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_tensor_betas_changed_in_place_run_the_kernels_and_never_recompile(backend):
    """Tensor betas (torch's way to schedule them under compile) reach the
    native kernels through the hyper tensor, with the doubles an eager step
    reads from them: compiled equals eager bit for bit, and in-place changes
    of the betas reuse the one graph."""
    pa, pb = _params(), _params()
    betas = lambda: (torch.tensor(0.9), torch.tensor(0.99))  # noqa: E731
    oa = fusedopt.AdamW(pa, lr=torch.tensor(0.01), betas=betas(), weight_decay=0.1)
    ob = fusedopt.AdamW(pb, lr=torch.tensor(0.01), betas=betas(), weight_decay=0.1)
    counter = CompileCounterWithBackend(backend)
    targets = set()

    def recording(gm, example_inputs):
        targets.update(str(n.target) for n in gm.graph.nodes)
        return counter(gm, example_inputs)

    step = torch.compile(oa.step, fullgraph=True, backend=recording)
    gen = torch.Generator().manual_seed(1)
    for i in range(4):
        for a, b, g in zip(pa, pb, _grads(pa, gen)):
            a.grad, b.grad = g.clone(), g.clone()
        for o in (oa, ob):
            o.param_groups[0]["betas"][0].fill_(0.9 - 0.02 * i)
            o.param_groups[0]["betas"][1].fill_(0.99 + 0.002 * i)
        step()
        ob.step()
    assert counter.frame_count == 1
    # the native kernels ran (the plain-torch fallback's ops are not in the graph)
    assert "fusedopt.adam_" in " ".join(targets) and not any("_foreach" in t for t in targets), targets
    _assert_equal(pa, pb, oa, ob)
