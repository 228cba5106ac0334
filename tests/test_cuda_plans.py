"""Native plans on CUDA (csrc/cuda/plan_ops.cpp): an eager CUDA step
through a plan launches what the list ops launch, over the same pointers, so
the two paths must agree bit for bit; a plan follows params and states whose
memory was replaced; it lets go of each step's grads after the update; and the
CPU and CUDA libraries never take each other's plans.

Every test here carries the `cuda` marker and is skipped without a GPU."""

import gc
import weakref

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import DEV
from fusedopt import _native_plan, _ops

import rule_calls
from plan_cases import CONFIGS, assert_same_run, planned_buckets, recorded_binds, run_plan_case

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend"), requires_cuda_kernels]

CUDA_FIRST_ID = 1 << 40  # csrc/cuda/plan_ops.cpp: CudaTables::kFirstId


@pytest.mark.parametrize("config", list(CONFIGS))
def test_cuda_plan_steps_equal_list_op_steps_bit_for_bit(config, monkeypatch):
    with_plans = run_plan_case(config, 6, True, monkeypatch, device=DEV)
    buckets = planned_buckets(with_plans[1])
    assert buckets, "no CUDA bucket took a native plan"
    assert with_plans[2].count(True) >= 3  # steps 1, 4 and 5 ran on a kept plan
    for b in buckets:
        assert b.native_plan.anchor.device == torch.device(DEV, 0)
        assert b.native_plan.id >= CUDA_FIRST_ID
    assert_same_run(with_plans, run_plan_case(config, 6, False, monkeypatch, device=DEV))


@pytest.mark.parametrize("config", ["adamw clip", "sgd nesterov clip"])
def test_cuda_plan_steps_under_the_grad_scaler_and_channels_last(config, monkeypatch):
    with_plans = run_plan_case(config, 6, True, monkeypatch, scaler=True, channels_last=True, device=DEV)
    assert planned_buckets(with_plans[1]) and True in with_plans[2]
    without = run_plan_case(config, 6, False, monkeypatch, scaler=True, channels_last=True, device=DEV)
    for p, q in zip(with_plans[0], without[0]):
        assert torch.equal(p.detach(), q.detach())


def _pair():
    """The same AdamW run twice on the GPU: through plans, and through the list ops."""
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(s, generator=gen) for s in ((4, 4), (6,), (70_000,))]
    a = [torch.nn.Parameter(x.to(DEV)) for x in base]
    b = [torch.nn.Parameter(x.to(DEV)) for x in base]
    return a, b, fusedopt.AdamW(a, lr=0.1, max_grad_norm=1.0), fusedopt.AdamW(b, lr=0.1, max_grad_norm=1.0)


def _step(a, b, oa, ob, monkeypatch, seed):
    gen = torch.Generator().manual_seed(seed)
    for x, y in zip(a, b):
        g = torch.empty_like(x).copy_(torch.randn(x.shape, generator=gen))  # laid out like the param
        x.grad, y.grad = g.clone(memory_format=torch.preserve_format), g.clone(memory_format=torch.preserve_format)
    monkeypatch.setattr(_native_plan, "ENABLED", True)
    oa.step()
    monkeypatch.setattr(_native_plan, "ENABLED", False)
    ob.step()


def _equal(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach())


def test_cuda_plan_follows_param_and_state_memory_replaced(monkeypatch):
    a, b, oa, ob = _pair()
    binds = recorded_binds(monkeypatch)
    _step(a, b, oa, ob, monkeypatch, 1)  # makes the plan
    _step(a, b, oa, ob, monkeypatch, 2)
    assert binds == [True]  # the kept plan took the grads
    _equal(a, b)
    for opt, p in ((oa, a[2]), (ob, b[2])):
        opt.state[p]["exp_avg"].data = opt.state[p]["exp_avg"].data.clone()  # how offloading swaps memory
    _step(a, b, oa, ob, monkeypatch, 3)
    assert binds[-1] is False  # the plan's own re-check saw the state's new memory
    _equal(a, b)
    torch.testing.assert_close(oa.state[a[2]]["exp_avg"], ob.state[b[2]]["exp_avg"], rtol=0, atol=0)
    old = a[0].data
    before = old.clone()
    a[0].data, b[0].data = a[0].data.clone(), b[0].data.clone()
    _step(a, b, oa, ob, monkeypatch, 4)
    assert binds[-1] is False
    _equal(a, b)
    assert torch.equal(old, before)  # nothing was written where the plan was made
    a[0].data, b[0].data = a[0].data.t(), b[0].data.t()  # same memory, other strides
    _step(a, b, oa, ob, monkeypatch, 5)
    _equal(a, b)


def test_a_model_moved_to_the_cpu_leaves_its_cuda_plan(monkeypatch):
    # .cpu() moves p.data and p.grad in place: the CUDA plan's bind goes to the
    # CPU library, which answers that the plan does not fit, and a CPU plan is made
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(5, generator=gen), torch.randn(3, generator=gen)]
    model = torch.nn.ParameterList([torch.nn.Parameter(x.to(DEV)) for x in base])
    ref = [torch.nn.Parameter(x.clone()) for x in base]
    opt, ref_opt = fusedopt.SGD(model.parameters(), lr=0.1), fusedopt.SGD(ref, lr=0.1)
    binds = recorded_binds(monkeypatch)
    for step in range(3):
        if step == 2:
            model.cpu()
        grads = [torch.randn(x.shape, generator=gen) for x in base]
        for p, q, g in zip(model, ref, grads):
            p.grad, q.grad = g.to(p.device), g.clone()
        opt.step()
        ref_opt.step()
    assert binds == [True, False]
    assert {b.native_plan.anchor.device.type for b in planned_buckets(opt)} == {"cpu"}
    for p, q in zip(model, ref):
        assert torch.equal(p.detach(), q.detach())


def test_a_step_updated_elsewhere_lets_go_of_the_grads_its_plan_took():
    # betas as CUDA tensors: the update runs the reference's device math (reading
    # them on the host would be a sync), after the stats pass over the plan
    p = torch.nn.Parameter(torch.randn(16, device=DEV))
    betas = (torch.tensor(0.9, device=DEV), torch.tensor(0.999, device=DEV))
    opt = fusedopt.Adam([p], lr=0.1, betas=betas, max_grad_norm=1.0)
    for _ in range(2):
        p.grad = torch.randn(16, device=DEV)
        opt.step()
    assert planned_buckets(opt)
    grad = weakref.ref(p.grad)
    p.grad = None
    gc.collect()
    assert grad() is None  # not held by the plan until the next step


def _plan_args():
    ps = [torch.zeros(3, device=DEV), torch.zeros(2, device=DEV)]
    gs = [torch.ones(3, device=DEV), torch.ones(2, device=DEV)]
    states = (
        [torch.zeros(3, device=DEV), torch.zeros(2, device=DEV)],
        [torch.zeros(3, device=DEV), torch.zeros(2, device=DEV)],
        [],
        [torch.zeros((), device=DEV), torch.zeros((), device=DEV)],
    )
    return ps, gs, states


def test_cuda_plans_hold_a_steps_grads_only_until_its_update():
    ps, gs, states = _plan_args()
    base = [g._use_count() for g in gs]
    plan = rule_calls.adam_plan(ps, gs, *states)
    assert plan.id >= CUDA_FIRST_ID
    assert [g._use_count() for g in gs] == [n + 1 for n in base]  # bound by the make
    plan.step_(*rule_calls.ADAM_PLAN_STEP)
    torch.cuda.synchronize()
    assert [g._use_count() for g in gs] == base
    assert plan.bind(gs)
    assert not plan.bind([gs[0], torch.ones(5, device=DEV)])  # refused: the plan keeps none of them
    assert [g._use_count() for g in gs] == base
    assert not plan.bind([g.cpu() for g in gs])  # CPU grads go to the CPU library: not its plan
    plan_id = plan.id
    del plan
    with pytest.raises(RuntimeError, match=f"no native plan {plan_id}"):
        _ops.PLANS.plan_bind(gs, plan_id)
    assert [g._use_count() for g in gs] == base


def test_cuda_plan_ops_refuse_what_they_cannot_serve():
    ps, gs, states = _plan_args()
    plan = rule_calls.adam_plan(ps, gs, *states)
    found_inf, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
    with pytest.raises(RuntimeError, match="sumsq"):
        plan.grad_stats_(None, found_inf, torch.zeros(1), 0.0)  # where the plan's tensors are not
    plan.grad_stats_(None, found_inf, sumsq, 0.0)
    torch.testing.assert_close(sumsq, torch.tensor([5.0], device=DEV))  # 3 + 2 ones
    with pytest.raises(RuntimeError, match="hyper must hold 6 values"):
        _ops.PLANS.plan_step_(plan.anchor, plan.id, [0.0, 0.0, 0.0, 0.0], *rule_calls.ADAM_PLAN_STEP[1:])
    assert not plan.bind([torch.ones(3, dtype=torch.float64, device=DEV), gs[1]])
    # a CUDA plan's id sent to the CPU library is unknown there, not another plan
    cpu = torch.empty(0)
    with pytest.raises(RuntimeError, match=f"no native plan {plan.id}"):
        _ops.PLANS.plan_step_(cpu, plan.id, *rule_calls.ADAM_PLAN_STEP)


def test_cuda_plans_let_go_of_their_tensors_with_the_optimizer():
    p = torch.nn.Parameter(torch.randn(16, device=DEV))
    opt = fusedopt.AdamW([p], lr=0.1)
    p.grad = torch.randn(16, device=DEV)
    opt.step()
    assert planned_buckets(opt)
    exp_avg = weakref.ref(opt.state[p]["exp_avg"])
    grad = weakref.ref(p.grad)
    p.grad = None
    gc.collect()
    assert grad() is None
    del opt
    gc.collect()
    assert exp_avg() is None
