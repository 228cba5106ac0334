"""fp32 master weights follow their param (issue 25, F4): a bf16 param written
by anyone but the step (model.load_state_dict, p.copy_, p.data = w, an EMA or
SWA swap, a DCP load) has its master re-seeded from it before the next update,
wherever it no longer equals the master's rounding; where the same values came
back, the master keeps its fp32 precision (see fusedopt/optim/_masters.py).

What master weights mean is torch.optim on fp32 copies of the params, the
params being their rounding: each test steps that beside fusedopt, and gives
the fp32 copies the same change."""

import copy

import pytest
import torch
from torch import nn

import fusedopt
from fusedopt import _native_plan
from helpers import fp32_tol

KINDS = {
    "AdamW": (fusedopt.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    "SGD": (fusedopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
}


@pytest.fixture(params=["plans", "list ops"])
def plans(request, monkeypatch):
    monkeypatch.setattr(_native_plan, "ENABLED", _native_plan.ENABLED and request.param == "plans")


def _model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(torch.bfloat16)


class Run:
    """A bf16 model stepped by fusedopt with fp32 masters, beside torch.optim
    stepping fp32 copies of its params with the same grads."""

    def __init__(self, kind="AdamW", seed=0):
        cls, torch_cls, kw = KINDS[kind]
        self.model = _model(seed)
        self.params = list(self.model.parameters())
        self.opt = cls(self.params, master_weights=True, **kw)
        self.fp32 = [nn.Parameter(p.detach().float()) for p in self.params]
        self.ref = torch_cls(self.fp32, **kw)
        self.gen = torch.Generator().manual_seed(1)

    def step(self, n=1, without_grad=(), twin=True):
        for _ in range(n):
            for i, (p, m) in enumerate(zip(self.params, self.fp32)):
                g = torch.randn(p.shape, generator=self.gen).bfloat16()
                p.grad, m.grad = (None, None) if i in without_grad else (g, g.float())
            self.opt.step()
            if twin:
                self.ref.step()
                self.check(skip=without_grad)

    def written(self, everywhere=False):
        """The params were written from outside: the fp32 copies follow them,
        as the masters must (wherever a param is not its copy's rounding, or
        everywhere: a master made anew)."""
        with torch.no_grad():
            for p, m in zip(self.params, self.fp32):
                m.copy_(p.float() if everywhere else torch.where(p.eq(m.bfloat16()), m, p.float()))

    def check(self, skip=()):
        """Each master is its fp32 copy, each param the master's rounding (but
        those of params not stepped: a master follows its param when it is)."""
        for i, (p, m) in enumerate(zip(self.params, self.fp32)):
            if i in skip:
                continue
            master = self.opt.state[p]["master_param"]
            torch.testing.assert_close(master, m.detach(), **fp32_tol())
            assert torch.equal(p.detach(), master.bfloat16())

    def snapshot(self):
        return [p.detach().clone() for p in self.params] + [self.opt.state[p]["master_param"].clone() for p in self.params]


def _other_weights():
    return _model(seed=7).state_dict()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["model.load_state_dict", "p.copy_", "p.data = w", "p.detach().mul_"])
def test_a_param_written_from_outside_reseeds_its_master(kind, how, plans):
    run = Run(kind)
    run.step(3)
    other = list(_other_weights().values())
    with torch.no_grad():
        if how == "model.load_state_dict":
            run.model.load_state_dict(_other_weights())
        elif how == "p.copy_":
            for p, w in zip(run.params, other):
                p.copy_(w)
        elif how == "p.data = w":
            for p, w in zip(run.params, other):
                p.data = w.clone()
        else:
            for p in run.params:
                p.detach().mul_(0.5)  # detach() shares the param's version counter
    run.written()
    run.step(3)


def test_a_param_written_while_it_had_no_grad_reseeds_its_master(plans):
    # the steps in between build plans without it (its records wait in a table)
    run = Run()
    run.step(2)
    run.step(1, without_grad={0})
    with torch.no_grad():
        run.params[0].copy_(torch.randn_like(run.params[0]))
    run.written()
    run.step(1, without_grad={0})
    run.step(2)


def _continued(run, n=3, twin=True):
    run.step(n, twin=twin)
    return run.snapshot()


@pytest.mark.parametrize("how", ["load_state_dict", "p.data swap", "offload round trip"])
def test_the_same_values_coming_back_keep_the_masters_precision(how, plans):
    """An EMA swapped in and out again, an offload round trip: the params end
    as they were, so the masters stand and training goes on bit for bit as if
    nothing had happened."""
    plain, swapped = Run(), Run()
    plain.step(3)
    swapped.step(3)
    model = swapped.model
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)
    )
    ema.update_parameters(model)
    if how == "load_state_dict":
        backup = copy.deepcopy(model.state_dict())
        model.load_state_dict(ema.module.state_dict())
        model(torch.randn(2, 6).bfloat16())  # evaluate the EMA weights
        model.load_state_dict(backup)
    elif how == "p.data swap":
        for p, e in zip(model.parameters(), ema.module.parameters()):
            p.data, e.data = e.data, p.data
        model(torch.randn(2, 6).bfloat16())
        for p, e in zip(model.parameters(), ema.module.parameters()):
            p.data, e.data = e.data, p.data
    else:
        for p in model.parameters():
            p.data = p.data.clone()
    after = _continued(swapped)
    for x, y in zip(after, _continued(plain)):
        assert torch.equal(x, y)


def test_training_goes_on_from_ema_weights_swapped_in(plans):
    run = Run()
    ema = torch.optim.swa_utils.AveragedModel(
        run.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.5)
    )
    for _ in range(4):
        run.step()
        ema.update_parameters(run.model)
    run.model.load_state_dict(ema.module.state_dict())  # the EMA weights become the model's
    run.written()
    run.step(3)


def test_swa_weights_taken_over_with_swalr(plans):
    run = Run()
    swa = torch.optim.swa_utils.AveragedModel(run.model)
    schedulers = [torch.optim.swa_utils.SWALR(opt, swa_lr=0.005, anneal_epochs=2) for opt in (run.opt, run.ref)]
    for _ in range(4):
        run.step()
        swa.update_parameters(run.model)
        for s in schedulers:
            s.step()
    run.model.load_state_dict(swa.module.state_dict())
    run.written()
    run.step(3)


def test_a_dcp_load_of_model_and_optimizer_continues_bit_for_bit(tmp_path, plans):
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    run = Run()
    run.step(3)
    dcp.save({"model": run.model.state_dict(), "optim": run.opt.state_dict()}, checkpoint_id=str(tmp_path))
    gen = run.gen.get_state()
    first = _continued(run, twin=False)  # (the twin is not reloaded: the bits are compared)
    # loaded in place into the live tensors, then through load_state_dict, as DCP's docs do it
    sd = {"model": run.model.state_dict(), "optim": run.opt.state_dict()}
    dcp.load(sd, checkpoint_id=str(tmp_path))
    run.model.load_state_dict(sd["model"])
    run.opt.load_state_dict(sd["optim"])
    run.gen.set_state(gen)
    for x, y in zip(_continued(run, twin=False), first):
        assert torch.equal(x, y)


def test_a_dcp_load_of_other_weights_reseeds_the_masters(tmp_path, plans):
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    donor = _model(seed=7)
    dcp.save({"model": donor.state_dict()}, checkpoint_id=str(tmp_path))
    run = Run()
    run.step(3)
    sd = {"model": run.model.state_dict()}
    dcp.load(sd, checkpoint_id=str(tmp_path))
    run.model.load_state_dict(sd["model"])
    for p, q in zip(run.params, donor.parameters()):
        assert torch.equal(p.detach(), q.detach())
    run.written()
    run.step(3)


def test_a_compiled_step_takes_masters_made_anew():
    """A compiled step does not see params written between steps (dynamo cannot
    branch on a version counter); the README's remedy: delete the masters, and
    the next step makes them anew from the params (a state key gone recompiles)."""
    run = Run()
    run.opt.step = torch.compile(run.opt.step, fullgraph=True, backend="eager")
    run.step(2)
    run.model.load_state_dict(_other_weights())
    for p in run.params:
        del run.opt.state[p]["master_param"]
    run.written(everywhere=True)
    run.step(2)
