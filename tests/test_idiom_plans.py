"""torch's AMP idiom with fusedopt's classes through the optimizer's native
plans (fusedopt/optim/_idiom.py, csrc/plan_bound_ops.h): scaler.unscale_(opt),
fusedopt.clip_grad_norm_(params) and scaler.step(opt) bind the step's grads
once, and give what the list ops give, bit for bit."""

from __future__ import annotations

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels, requires_native_cpu
from fusedopt import _native_plan, _ops
from fusedopt.optim import _idiom
from plan_cases import recorded_binds

SCALE = 1024.0
MAX_NORM = 0.5
SHAPES = ((7,), (3, 5), (1,), (64,), (100,))
CONFIGS = {
    "adamw": (fusedopt.AdamW, dict(lr=0.05, weight_decay=0.1)),
    "adam amsgrad": (fusedopt.Adam, dict(lr=0.05, amsgrad=True)),
    "sgd momentum": (fusedopt.SGD, dict(lr=0.1, momentum=0.9)),
}


def _params(dtype, shapes=SHAPES, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype).to(device)) for s in shapes]


def run_idiom(config, dtype, steps, served, monkeypatch, in_place=False, between=None, groups=1, device="cpu"):
    """``steps`` AMP steps of torch's idiom with fusedopt's classes; ``served``:
    unscale_ through the plans (else the list ops, as before them). Returns the
    params, the optimizer, the scaler and, per step, the grads after unscale_,
    the norm clip_grad_norm_ returned and the grads after it. ``between(step,
    params)`` runs between unscale_ and the clip."""
    cls, kw = CONFIGS[config]
    params = _params(dtype, device=device)
    if groups == 2:
        opt = cls([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}], **kw)
    else:
        opt = cls(params, **kw)
    scaler = fusedopt.GradScaler(torch.device(device).type, init_scale=SCALE, growth_interval=3)
    gen = torch.Generator().manual_seed(1)
    log = []
    with monkeypatch.context() as m:
        if not served:
            m.setattr(_idiom, "unscale_", lambda *args: None)
        for step in range(steps):
            for p in params:
                g = (torch.randn(p.shape, generator=gen) * scaler.get_scale()).to(dtype).to(device)
                if in_place and p.grad is not None:
                    p.grad.copy_(g)  # backward accumulating into zeroed grads
                else:
                    p.grad = g  # after zero_grad(set_to_none=True)
            scaler.scale(torch.ones((), device=device))
            if step == 2:
                params[3].grad[5] = float("inf")  # this step is skipped, the scale backs off
            scaler.unscale_(opt)
            unscaled = [p.grad.clone() for p in params]
            if between is not None:
                between(step, params)
            norm = fusedopt.clip_grad_norm_(params, MAX_NORM)
            log.append((unscaled, norm.clone(), [p.grad.clone() for p in params]))
            scaler.step(opt)
            scaler.update()
    return params, opt, scaler, log


def same_bits(x, y) -> bool:
    """Bit for bit (a NaN equals the same NaN; -0 is not 0)."""
    bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
    return x.dtype is y.dtype and x.shape == y.shape and torch.equal(x.view(bits[x.dtype]), y.view(bits[y.dtype]))


def assert_same(a, b):
    (pa, oa, sa, la), (pb, ob, sb, lb) = a, b
    for p, q in zip(pa, pb):
        assert torch.equal(p.detach(), q.detach())
    for (_, xa), (_, xb) in zip(oa.state_dict()["state"].items(), ob.state_dict()["state"].items()):
        for k in xa:
            assert torch.equal(xa[k], xb[k]), k
    assert sa.get_scale() == sb.get_scale()
    for (ua, na, ca), (ub, nb, cb) in zip(la, lb):
        assert all(same_bits(x, y) for x, y in zip(ua, ub))
        assert same_bits(na, nb)
        assert all(same_bits(x, y) for x, y in zip(ca, cb))


class Counting:
    """A stand-in for an op namespace that counts each op's calls and keeps
    what the plan ops were handed to bind."""

    def __init__(self, ops):
        self.ops, self.counts, self.binds = ops, {}, []

    def __getattr__(self, name):
        ops, counts, binds = self.ops, self.counts, self.binds

        def call(*args):
            counts[name] = counts.get(name, 0) + 1
            if len(args) == {"plan_unscale_": 5, "plan_grad_stats_": 7, "plan_step_": 14}.get(name):
                grads, ids = args[-2:]
                binds.append((name, "bind" if grads is not None else "recheck", len(ids)))
            return getattr(ops, name)(*args)

        return call


@requires_native_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_idiom_through_plans_equals_the_list_ops_bit_for_bit(config, dtype, monkeypatch):
    for in_place in (False, True):
        planned = run_idiom(config, dtype, 6, True, monkeypatch, in_place=in_place)
        listed = run_idiom(config, dtype, 6, False, monkeypatch, in_place=in_place)
        assert_same(planned, listed)
        assert not torch.isfinite(planned[3][2][1])  # step 2 found the inf (and was skipped: same params)


@requires_native_cpu
def test_idiom_binds_once_and_runs_no_list_op(monkeypatch):
    plans, native = Counting(_ops.PLANS), Counting(_ops._NATIVE)
    monkeypatch.setattr(_ops, "PLANS", plans)
    monkeypatch.setattr(_ops, "_NATIVE", native)
    cls, kw = CONFIGS["adamw"]
    params = _params(torch.float32)
    opt = cls(params, **kw)
    scaler = fusedopt.GradScaler("cpu", init_scale=SCALE)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape) * SCALE
        scaler.scale(torch.ones(()))
        plans.counts.clear(), plans.binds.clear(), native.counts.clear()
        scaler.unscale_(opt)
        fusedopt.clip_grad_norm_(params, MAX_NORM)
        scaler.step(opt)
        scaler.update()
        if step == 0:
            # no cached buckets yet: unscale_ makes no optimizer state, the list ops run
            assert native.counts == {"unscale_": 2, "grad_stats_": 1}
            assert "plan_unscale_" not in plans.counts
    # one bucket: unscale_ binds the grads once; the clip's stats pass and the
    # step re-check the plan; the clip scales through it
    assert plans.counts == {"plan_unscale_": 2, "plan_grad_stats_": 1, "plan_step_": 1}
    assert plans.binds == [("plan_unscale_", "bind", 1), ("plan_grad_stats_", "recheck", 1),
                           ("plan_step_", "recheck", 1)]
    assert native.counts == {}
    assert opt not in _idiom._HOLDING  # the step consumed the record


@requires_native_cpu
def test_two_groups_through_plans_close_to_the_list_ops(monkeypatch):
    plans = Counting(_ops.PLANS)
    with monkeypatch.context() as m:
        m.setattr(_ops, "PLANS", plans)
        planned = run_idiom("adamw", torch.float32, 5, True, monkeypatch, groups=2)
    assert plans.counts["plan_unscale_"] >= 2 * 2 * 3  # steps 1-4: two buckets, unscale and clip
    listed = run_idiom("adamw", torch.float32, 5, False, monkeypatch, groups=2)
    # the norm is summed per bucket (one rounding to float32 more than one list's sum)
    for (ua, na, ca), (ub, nb, cb) in zip(planned[3], listed[3]):
        assert all(same_bits(x, y) for x, y in zip(ua, ub))  # unscale_: bit for bit
        torch.testing.assert_close(na, nb, rtol=1e-6, atol=0, equal_nan=True)
        for x, y in zip(ca, cb):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=0, equal_nan=True)
    for p, q in zip(planned[0], listed[0]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def _torch_idiom(config, dtype, steps):
    cls, kw = CONFIGS[config]
    torch_cls = getattr(torch.optim, cls.__name__)
    params = _params(dtype)
    opt = torch_cls(params, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=3)
    gen = torch.Generator().manual_seed(1)
    norms = []
    for step in range(steps):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen) * scaler.get_scale()).to(dtype)
        scaler.scale(torch.ones(()))
        if step == 2:
            params[3].grad[5] = float("inf")
        scaler.unscale_(opt)
        norms.append(torch.nn.utils.clip_grad_norm_(params, MAX_NORM))
        scaler.step(opt)
        scaler.update()
    return params, scaler, norms


@pytest.mark.parametrize("config", list(CONFIGS))
def test_idiom_through_plans_close_to_torchs_idiom(config, monkeypatch):
    params, _, scaler, log = run_idiom(config, torch.float32, 6, True, monkeypatch)
    tparams, tscaler, tnorms = _torch_idiom(config, torch.float32, 6)
    assert scaler.get_scale() == tscaler.get_scale()
    for (_, norm, _), tnorm in zip(log, tnorms):
        if torch.isfinite(tnorm):
            torch.testing.assert_close(norm, tnorm, rtol=1e-5, atol=0)
        else:
            assert not torch.isfinite(norm)
    for p, q in zip(params, tparams):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _replace(what):
    def between(step, params):
        if step == 3:
            what(params)
    return between


@requires_native_cpu
@pytest.mark.parametrize("change", [
    # a new grad object: the clip and the step see it is not the bound one
    "new grad",
    # the same grad object over new memory: the plans' re-check takes the new pointer
    "new data",
    # another dtype under .data (a bf16 param takes float32 grads): the re-check
    # refuses, writing nothing; the clip takes the list ops, the step rebuilds
    "new dtype",
])
def test_grads_changed_between_unscale_and_clip(change, monkeypatch):
    def edit(params):
        p = params[1]
        if change == "new grad":
            p.grad = p.grad.clone()
        elif change == "new data":
            p.grad.data = p.grad.data.clone()
        else:
            p.grad.data = p.grad.data.float()

    between = _replace(edit)
    with monkeypatch.context() as m:
        binds = recorded_binds(m)
        planned = run_idiom("adamw", torch.bfloat16, 6, True, m, between=between)
    # steps 1, 2 and 4: unscale_ binds, the clip and the step re-check (step 5:
    # unscale_ binds new grads where step 4's were re-bucketed)
    assert binds.count(True) >= 9
    # a changed dtype: the clip's re-check refuses, so does the step's bind
    # (which rebuilds the buckets); step 4's bf16 grad again: unscale_'s bind
    # and the step's refuse
    assert binds.count(False) == (4 if change == "new dtype" else 0)
    listed = run_idiom("adamw", torch.bfloat16, 6, False, monkeypatch, between=between)
    assert_same(planned, listed)


@requires_native_cpu
def test_grads_that_no_longer_fit_the_plans_take_the_list_ops(monkeypatch):
    # step 3's grads of a bf16 param are float32 (torch takes them): the
    # first plan_unscale_ finds the plan does not fit before writing anything
    cls, kw = CONFIGS["adamw"]
    results = []
    for served in (True, False):
        params = _params(torch.bfloat16)
        if hasattr(params[2], "grad_dtype"):
            params[2].grad_dtype = None  # torch >= 2.12 checks a grad's dtype on assignment
        opt = cls(params, **kw)
        scaler = fusedopt.GradScaler("cpu", init_scale=SCALE)
        gen = torch.Generator().manual_seed(1)
        with monkeypatch.context() as m:
            if not served:
                m.setattr(_idiom, "unscale_", lambda *args: None)
            binds = recorded_binds(m)
            norms = []
            for step in range(5):
                for i, p in enumerate(params):
                    g = torch.randn(p.shape, generator=gen) * SCALE
                    p.grad = g if (step == 3 and i == 2) else g.to(torch.bfloat16)
                scaler.scale(torch.ones(()))
                scaler.unscale_(opt)
                norms.append(fusedopt.clip_grad_norm_(params, MAX_NORM))
                scaler.step(opt)
                scaler.update()
        results.append((params, norms))
        # step 3: the plan refuses the float32 grad (unscale_ through the plans,
        # then the step's own bind, which rebuilds); step 4 the bf16 one again
        assert binds.count(False) == (4 if served else 2)
    (pa, na), (pb, nb) = results
    assert all(torch.equal(p, q) for p, q in zip(pa, pb))
    assert all(same_bits(x, y) for x, y in zip(na, nb))


@requires_native_cpu
def test_a_plan_that_no_longer_fits_writes_nothing():
    params = _params(torch.float32, ((4,), (6,)))
    opt = fusedopt.AdamW(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    (bucket,) = [b for c in opt._bucket_cache.caches for b in c.buckets.values()]
    plan = bucket.native_plan
    grads = [torch.full((4,), 2.0), torch.full((5,), 2.0)]  # the second: another shape
    found = torch.zeros(1)
    with pytest.raises(_native_plan.Refit):
        plan.unscale_(found, torch.full((1,), 0.5), binds=_native_plan.PendingBinds([
            type(bucket)("native", bucket.device, grads=grads, native_plan=plan)]))
    assert all(torch.equal(g, torch.full_like(g, 2.0)) for g in grads)
    # and a plan without bound grads refuses a re-check
    with pytest.raises(_native_plan.Refit):
        plan.unscale_(found, torch.full((1,), 0.5), binds=_native_plan.PendingRechecks([plan]))


@requires_native_cpu
def test_unscale_twice_raises_as_torchs(monkeypatch):
    params = _params(torch.float32)
    opt = fusedopt.AdamW(params, lr=0.1)
    scaler = fusedopt.GradScaler("cpu", init_scale=SCALE)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape) * SCALE
        scaler.scale(torch.ones(()))
        scaler.unscale_(opt)
        if step == 2:
            held = [p.grad.clone() for p in params]
            with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
                scaler.unscale_(opt)
            assert all(torch.equal(p.grad, h) for p, h in zip(params, held))  # not unscaled twice
        scaler.step(opt)
        scaler.update()


@requires_native_cpu
def test_update_lets_go_of_grads_no_step_consumed():
    params = _params(torch.float32)
    opt = fusedopt.AdamW(params, lr=0.1)
    scaler = fusedopt.GradScaler("cpu", init_scale=SCALE)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape) * SCALE
        scaler.scale(torch.ones(()))
        base = [p.grad._use_count() for p in params]
        scaler.unscale_(opt)
        if step < 2:
            scaler.step(opt)
        else:
            # the caller skips the step: the plans (and the record) hold the grads until update()
            assert opt in _idiom._HOLDING
            assert all(p.grad._use_count() > b for p, b in zip(params, base))
        scaler.update()
        assert [p.grad._use_count() for p in params] == base
        assert opt not in _idiom._HOLDING


@requires_native_cpu
def test_clip_of_other_params_takes_the_list_ops(monkeypatch):
    params = _params(torch.float32)
    opt = fusedopt.AdamW(params, lr=0.1)
    scaler = fusedopt.GradScaler("cpu", init_scale=SCALE)
    native = Counting(_ops._NATIVE)
    monkeypatch.setattr(_ops, "_NATIVE", native)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape) * SCALE
        scaler.scale(torch.ones(()))
        scaler.unscale_(opt)
        native.counts.clear()
        fusedopt.clip_grad_norm_(params[1:], MAX_NORM)  # a subset
        fusedopt.clip_grad_norm_(params + params[:1], MAX_NORM)  # one listed twice
        fusedopt.clip_grad_norm_(params, MAX_NORM, norm_type=1.0)  # torch's own
        # (the duplicate: two rounds of the scaling, as torch scales p.grad twice)
        assert native.counts == {"grad_stats_": 2, "unscale_": 3}
        scaler.step(opt)
        scaler.update()


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_backend")
@requires_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_idiom_through_plans_equals_the_list_ops_bit_for_bit(dtype, monkeypatch):
    from cuda_common import DEV

    plans = Counting(_ops.PLANS)
    with monkeypatch.context() as m:
        m.setattr(_ops, "PLANS", plans)
        planned = run_idiom("adamw", dtype, 6, True, m, device=DEV)
    assert plans.counts["plan_unscale_"] == 10  # steps 1-5: unscale_ and the clip's scaling
    assert all(b.native_plan.id >= 1 << 40 for c in planned[1]._bucket_cache.caches for b in c.buckets.values())
    assert_same(planned, run_idiom("adamw", dtype, 6, False, monkeypatch, device=DEV))
