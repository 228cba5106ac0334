"""Native plans (fusedopt/_native_plan.py, csrc/cpu/plan_ops.cpp): an eager
CPU step through a plan computes exactly what the list ops compute, a plan
never writes through a pointer that went stale, and it lets go of every tensor
it holds with its optimizer."""

import gc
import os
import subprocess
import sys
import weakref

import pytest
import torch

import fusedopt
from fusedopt import _native_plan, _ops

import rule_calls
from helpers import fp32_tol, set_grads
from plan_cases import CONFIGS, assert_same_run, planned_buckets, run_plan_case

pytestmark = pytest.mark.skipif(
    not _native_plan.available(torch.device("cpu")), reason="native plans need the native CPU library"
)

@pytest.mark.parametrize("config", list(CONFIGS))
def test_plan_steps_equal_list_op_steps_bit_for_bit(config, monkeypatch):
    with_plans = run_plan_case(config, 6, True, monkeypatch)
    assert planned_buckets(with_plans[1])
    assert with_plans[2].count(True) >= 3  # steps 1, 4 and 5 ran on a kept plan
    assert_same_run(with_plans, run_plan_case(config, 6, False, monkeypatch))


@pytest.mark.parametrize("config", ["adamw clip", "sgd nesterov clip"])
def test_plan_steps_under_the_grad_scaler_and_channels_last(config, monkeypatch):
    with_plans = run_plan_case(config, 6, True, monkeypatch, scaler=True, channels_last=True)
    assert planned_buckets(with_plans[1]) and True in with_plans[2]
    without = run_plan_case(config, 6, False, monkeypatch, scaler=True, channels_last=True)
    for p, q in zip(with_plans[0], without[0]):
        assert torch.equal(p.detach(), q.detach())


def _pair(shapes=((4, 4), (6,)), dtype=torch.float32, **kw):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    return a, b, fusedopt.AdamW(a, lr=0.1, **kw), torch.optim.AdamW(b, lr=0.1, **kw)


def _step(a, b, oa, ob, grad=lambda p: torch.randn_like(p)):
    for x, y in zip(a, b):
        g = grad(x)
        x.grad, y.grad = g.clone(memory_format=torch.preserve_format), g.clone(memory_format=torch.preserve_format)
    oa.step()
    ob.step()


def _same(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())


def test_param_data_moved_to_new_storage_is_updated_there():
    a, b, oa, ob = _pair()
    _step(a, b, oa, ob)
    old = a[0].data
    before = old.clone()
    a[0].data, b[0].data = a[0].data.clone(), b[0].data.clone()
    _step(a, b, oa, ob)
    _same(a, b)
    assert torch.equal(old, before)  # the plan did not write the storage it was made with


def test_state_data_moved_to_new_storage_is_updated_there():
    a, b, oa, ob = _pair()
    _step(a, b, oa, ob)
    for opt, p in ((oa, a[1]), (ob, b[1])):
        st = opt.state[p]
        st["exp_avg"].data = st["exp_avg"].data.clone()  # how offloading code swaps a state's memory
    _step(a, b, oa, ob)
    _same(a, b)
    torch.testing.assert_close(oa.state[a[1]]["exp_avg"], ob.state[b[1]]["exp_avg"], **fp32_tol())


def test_param_data_transposed_in_place_of_its_storage():
    # same storage and data pointer, other strides: the plan's pointers would be
    # right and its element order wrong
    a, b, oa, ob = _pair()
    _step(a, b, oa, ob)
    a[0].data, b[0].data = a[0].data.t(), b[0].data.t()
    _step(a, b, oa, ob)
    _same(a, b)


def test_grads_that_change_kind_between_steps():
    a, b, oa, ob = _pair()
    _step(a, b, oa, ob)
    _step(a, b, oa, ob, grad=lambda p: torch.randn(p.shape[::-1]).t() if p.dim() == 2 else torch.randn_like(p))
    _step(a, b, oa, ob)
    _same(a, b)


def test_bf16_params_whose_grads_turn_float32():
    a = [torch.nn.Parameter(torch.randn(8).bfloat16())]
    opt = fusedopt.AdamW(a, lr=0.1)
    ref_p = [torch.nn.Parameter(a[0].detach().clone())]
    ref = fusedopt.AdamW(ref_p, lr=0.1)
    for dtype in (torch.bfloat16, torch.float32, torch.float32):
        g = torch.randn(8)
        a[0].grad = ref_p[0].grad = None
        set_grads(a, [g.to(dtype)])
        opt.step()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(_native_plan, "ENABLED", False)
            set_grads(ref_p, [g.to(dtype)])
            ref.step()
    assert torch.equal(a[0].detach(), ref_p[0].detach())


def test_plans_let_go_of_their_tensors_with_the_optimizer():
    p = torch.nn.Parameter(torch.randn(16))
    opt = fusedopt.AdamW([p], lr=0.1)
    p.grad = torch.randn(16)
    opt.step()
    exp_avg = weakref.ref(opt.state[p]["exp_avg"])
    grad = weakref.ref(p.grad)
    p.grad = None  # the plan released the step's grad when the update was done
    gc.collect()
    assert grad() is None
    del opt
    gc.collect()
    assert exp_avg() is None


def test_a_reset_state_is_let_go_by_the_next_step():
    p = torch.nn.Parameter(torch.randn(16))
    opt = fusedopt.AdamW([p], lr=0.1)
    p.grad = torch.randn(16)
    opt.step()
    exp_avg = weakref.ref(opt.state[p]["exp_avg"])
    opt.state.clear()
    opt.step()
    gc.collect()
    assert exp_avg() is None


def test_plan_ops_refuse_what_they_cannot_serve():
    ps, gs = [torch.zeros(3)], [torch.ones(3)]
    states = [torch.zeros(3)], [torch.zeros(3)], [], [torch.zeros(())]
    plan = rule_calls.adam_plan(ps, gs, *states)
    args = rule_calls.ADAM_PLAN_STEP
    _ops.PLANS.plan_step_(ps[0], plan.id, *args)
    with pytest.raises(RuntimeError, match="no grads bound"):
        _ops.PLANS.plan_step_(ps[0], plan.id, *args)  # the update released them
    assert plan.bind(gs)
    with pytest.raises(RuntimeError, match="hyper must hold 6 values"):
        _ops.PLANS.plan_step_(ps[0], plan.id, [0.0, 0.0, 0.0, 0.0], *args[1:])  # SGD's hyperparameters
    assert plan.bind(gs)
    amsgrad = [*rule_calls.ADAM_HYPER[:5], 1.0]
    with pytest.raises(RuntimeError, match="made for 2 adam state lists"):
        _ops.PLANS.plan_step_(ps[0], plan.id, amsgrad, *args[1:])
    assert not plan.bind([torch.ones(4)])  # another element count: the caller makes a new plan
    assert not plan.bind([torch.ones(3, dtype=torch.float64)])
    assert plan.bind(gs)
    with pytest.raises(RuntimeError, match="has 2 elements but params"):
        rule_calls.adam_plan(ps, [torch.ones(2)], *states)
    plan_id = plan.id
    del plan
    with pytest.raises(RuntimeError, match=f"no native plan {plan_id}"):
        _ops.PLANS.plan_bind(gs, plan_id)


def test_disable_plans_from_the_environment():
    env = dict(os.environ, FUSEDOPT_DISABLE_PLANS="1")
    out = subprocess.run(
        [sys.executable, "-c", "import fusedopt._native_plan as n; print(n.ENABLED)"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    assert out.stdout.strip() == "False"


def test_plans_hold_a_steps_grads_only_until_its_update():
    # the grads cross as raw handles owned by the plan (csrc/raw_handles.h):
    # each must be let go on every path, or a model's grads would outlive zero_grad()
    ps, gs = [torch.zeros(3), torch.zeros(2)], [torch.ones(3), torch.ones(2)]
    states = [torch.zeros(3), torch.zeros(2)], [torch.zeros(3), torch.zeros(2)], [], [torch.zeros(()), torch.zeros(())]
    base = [g._use_count() for g in gs]
    plan = rule_calls.adam_plan(ps, gs, *states)
    assert [g._use_count() for g in gs] == [b + 1 for b in base]  # bound by the make
    plan.step_(*rule_calls.ADAM_PLAN_STEP)
    assert [g._use_count() for g in gs] == base
    assert plan.bind(gs)
    assert [g._use_count() for g in gs] == [b + 1 for b in base]
    assert not plan.bind([gs[0], torch.ones(5)])  # refused: the plan keeps none of them
    assert [g._use_count() for g in gs] == base
    plan_id = plan.id
    del plan
    with pytest.raises(RuntimeError, match=f"no native plan {plan_id}"):
        _ops.PLANS.plan_bind(gs, plan_id)
    assert [g._use_count() for g in gs] == base


def test_another_librarys_plan_does_not_fit_these_grads():
    # ids of the CUDA library's plans start at 2**40 (csrc/plan_registry.h): CPU
    # grads bound to one were dispatched here because they are not on its device
    gs = [torch.ones(3), torch.ones(2)]
    base = [g._use_count() for g in gs]
    assert _ops.PLANS.plan_bind(gs, 1 << 40) is False
    assert [g._use_count() for g in gs] == base
    with pytest.raises(RuntimeError, match="no native plan 12345"):
        _ops.PLANS.plan_bind(gs, 12345)  # one of this library's own, unknown: a bug, refused


def test_release_lets_go_of_the_bound_grads():
    ps, gs = [torch.zeros(3), torch.zeros(2)], [torch.ones(3), torch.ones(2)]
    states = [torch.zeros(3), torch.zeros(2)], [torch.zeros(3), torch.zeros(2)], [], [torch.zeros(()), torch.zeros(())]
    base = [g._use_count() for g in gs]
    plan = rule_calls.adam_plan(ps, gs, *states)
    assert [g._use_count() for g in gs] == [b + 1 for b in base]
    plan.release()
    assert [g._use_count() for g in gs] == base
    with pytest.raises(RuntimeError, match="no grads bound"):
        plan.step_(*rule_calls.ADAM_PLAN_STEP)


def test_a_steps_first_op_binds_every_reused_plan_before_it_writes():
    # the binds a step folds into its first op (csrc/plan_ops_common.h,
    # bind_each): one plan that does not fit refuses the op with nothing
    # written and no grads kept; when all fit, the later plans are bound by it
    def lists():
        return [torch.zeros(3)], [torch.zeros(3)], [torch.zeros(3)], [], [torch.zeros(())]

    (pa, *sa), (pb, *sb) = lists(), lists()
    ga, gb = [torch.ones(3)], [torch.full((3,), 2.0)]
    a, b = rule_calls.adam_plan(pa, ga, *sa), rule_calls.adam_plan(pb, gb, *sb)
    a.release()
    b.release()
    base = [g._use_count() for g in ga + gb]
    args = rule_calls.ADAM_PLAN_STEP
    bad = [torch.ones(4)]  # b's param has 3 elements
    assert _ops.PLANS.plan_step_(pa[0], a.id, *args, ga + bad, [a.id, b.id]) is False
    assert torch.equal(pa[0], torch.zeros(3)) and torch.equal(sa[3][0], torch.zeros(()))  # nothing written
    assert [g._use_count() for g in ga + gb] == base  # and no grads kept
    with pytest.raises(RuntimeError, match="no grads bound"):
        _ops.PLANS.plan_step_(pb[0], b.id, *args)
    assert _ops.PLANS.plan_step_(pa[0], a.id, *args, ga + gb, [a.id, b.id]) is True
    assert _ops.PLANS.plan_step_(pb[0], b.id, *args) is True  # bound by a's op
    assert [g._use_count() for g in ga + gb] == base
    # what each plan gives stepped on its own
    (qa, *ra), (qb, *rb) = lists(), lists()
    for q, r, g in ((qa, ra, ga), (qb, rb, gb)):
        rule_calls.adam_plan(q, g, *r).step_(*args)
    for x, y in ((pa, qa), (pb, qb), (sa[0], ra[0]), (sb[1], rb[1])):
        assert torch.equal(x[0], y[0])


def _two_groups(clip):
    torch.manual_seed(0)
    groups = [[torch.nn.Parameter(torch.randn(5)) for _ in range(2)] for _ in range(2)]
    opt = fusedopt.AdamW([{"params": g} for g in groups], lr=0.1, max_grad_norm=1.0 if clip else None)
    return [p for g in groups for p in g], opt


def _count_plan_ops(monkeypatch):
    counts = {}
    plans = _ops.PLANS

    class Counting:
        def __getattr__(self, name):
            def call(*args):
                counts[name] = counts.get(name, 0) + 1
                return getattr(plans, name)(*args)
            return call

    monkeypatch.setattr(_ops, "PLANS", Counting())
    return counts


@pytest.mark.parametrize("clip", [False, True])
def test_a_later_buckets_plan_that_no_longer_fits_updates_no_bucket_twice(clip, monkeypatch):
    a, oa = _two_groups(clip)
    b, ob = _two_groups(clip)
    gen = torch.Generator().manual_seed(1)
    counts = _count_plan_ops(monkeypatch)
    for step in range(4):
        gs = [torch.randn(5, generator=gen) for _ in a]
        set_grads(a, [g.clone() for g in gs])
        counts.clear()
        oa.step()
        if step == 1:
            # two buckets reused: one plan op each (two with the stats pass), the binds in the first
            assert counts == ({"plan_grad_stats_": 2, "plan_step_": 2} if clip else {"plan_step_": 2})
        with monkeypatch.context() as m:
            m.setattr(_native_plan, "ENABLED", False)
            set_grads(b, gs)
            ob.step()
        if step == 1:
            # the second group's plan no longer fits; the step's first op (the
            # first group's) finds it before writing, and the step starts again
            a[3].data, b[3].data = a[3].data.clone(), b[3].data.clone()
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach())
    for x, y in zip(a, b):
        assert torch.equal(oa.state[x]["exp_avg"], ob.state[y]["exp_avg"])
