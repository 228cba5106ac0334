"""What the distributed scenarios share: the registry, small models with uneven
and empty shards, a training loop, and comparisons of two runs' params and
optimizer states shard by shard."""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import fusedopt
import fusedopt._ops as ops
from fusedopt._dtensor import is_dtensor, local
from helpers import fp32_tol


@dataclass(frozen=True)
class Ctx:
    rank: int
    world: int
    dir: Path  # shared by the ranks, one per scenario


@dataclass(frozen=True)
class Scenario:
    fn: object
    world: int
    slow: bool

    def __call__(self, ctx: Ctx) -> None:
        self.fn(ctx)


SCENARIOS: dict[str, Scenario] = {}


def scenario(scenario_name: str, world: int = 2, slow: bool = False, **kwargs):
    """Registers fn(ctx, **kwargs) as scenario `scenario_name`, run on `world` ranks.
    `slow` ones run only in the suite's first pass (see tests/test_distributed.py)."""

    def register(fn):
        SCENARIOS[scenario_name] = Scenario(lambda ctx: fn(ctx, **kwargs), world, slow)
        return fn

    return register


NATIVE_OFF = os.environ.get("FUSEDOPT_DISABLE_NATIVE", "") not in ("", "0")
CPU_BACKEND = ops.backend(torch.device("cpu"))


def mlp(seed: int = 0) -> nn.Sequential:
    """On 2 ranks every weight and bias is unevenly sharded and the 1x3 layer's
    shards are empty on rank 1."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 1), nn.Linear(1, 7), nn.Tanh(), nn.Linear(7, 4))


def fsdp(model: nn.Module, **kwargs) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in model.modules():
        if isinstance(m, nn.Linear):
            fully_shard(m, **kwargs)
    fully_shard(model, **kwargs)
    return model


def batch(seed: int, step: int, features: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 * seed + step)
    return torch.randn(6, features, generator=gen) * 3


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).square().mean()


def clip_torch(model: nn.Module, max_norm: float) -> torch.Tensor:
    """torch's global-norm clip. Its clip_grad_norm_ refuses grads on several
    meshes (it stacks their norms), so then the norm is put together from its
    per-mesh parts with torch's own get_total_norm/clip_grads_with_norm_, as
    torchtitan does."""
    params = [p for p in model.parameters() if p.grad is not None]
    meshes = {}
    for p in params:
        meshes.setdefault(p.device_mesh if is_dtensor(p) else None, []).append(p)
    if len(meshes) == 1:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if is_dtensor(norm) else norm
    parts = [torch.nn.utils.get_total_norm([p.grad for p in ps]) for ps in meshes.values()]
    norm = torch.linalg.vector_norm(torch.stack([n.full_tensor() if is_dtensor(n) else n for n in parts]))
    for ps in meshes.values():
        torch.nn.utils.clip_grads_with_norm_(ps, max_norm, norm)
    return norm


def tol() -> dict:
    # the single-process suite's fp32 tolerance: sharding changes nothing in it
    return fp32_tol()


def assert_same(model_a, opt_a, model_b, opt_b, **tolerance) -> None:
    """Params (local shards) and every state entry: same keys, same kinds (a
    DTensor laid out like torch's, a plain step), values within tolerance."""
    tolerance = tolerance or tol()
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(local(pa).detach(), local(pb).detach(), msg=lambda m, n=name: f"{n}: {m}", **tolerance)
        sa, sb = opt_a.state.get(pa, {}), opt_b.state.get(pb, {})
        assert set(sa) == set(sb), f"{name}: state keys {sorted(sa)} vs {sorted(sb)}"
        for key in sb:
            va, vb = sa[key], sb[key]
            assert type(va) is type(vb), f"{name} {key}: {type(va).__name__} vs {type(vb).__name__}"
            if is_dtensor(vb):
                assert va.placements == vb.placements and va.device_mesh == vb.device_mesh, f"{name} {key} layout"
            if key == "step":
                assert float(va) == float(vb), f"{name}: step {float(va)} vs {float(vb)}"
            else:
                torch.testing.assert_close(local(va), local(vb), msg=lambda m, n=name, k=key: f"{n} {k}: {m}", **tolerance)


def assert_native(opt, n_params: int) -> None:
    """Every param was updated by the CPU backend of this run: the native
    kernels, unless the run disables them."""
    expected = "reference" if NATIVE_OFF else "cpu-native"
    assert CPU_BACKEND == expected, f"this run's CPU backend is {CPU_BACKEND}"
    assert opt.step_backends() == {expected: n_params}, opt.step_backends()


def snapshot(model, opt) -> list[torch.Tensor]:
    out = [local(p).detach().clone() for p in model.parameters()]
    for p in model.parameters():
        out += [local(v).clone() for _, v in sorted(opt.state.get(p, {}).items())]
    return out


def assert_bitwise(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"{what}: tensor {i} changed"


def poison_local_grad(model) -> None:
    """An inf in this rank's shard of the first grad that has one."""
    for p in model.parameters():
        g = local(p.grad)
        if g.numel():
            g.view(-1)[0] = float("inf")
            return
    raise AssertionError("no local grad element to poison")


def fused(name: str):
    return getattr(fusedopt, name)


def torch_cls(name: str):
    """The oracle of fusedopt's `name`: torch's optimizer, or lion-pytorch's Lion."""
    if name == "Lion":
        import lion_pytorch

        return lion_pytorch.Lion
    return getattr(torch.optim, name)


def train_pair(seed: int, ma, oa, mb, ob, steps: int, clip: float | None = None, features: int = 5) -> dict:
    """fusedopt's optimizer `oa` (or a ZeRO around one) on model `ma` and torch's
    `ob` on its twin `mb`, on the same batches; torch's side clips with torch's
    global clip, and fusedopt's last_grad_norm must be that norm. Returns the
    bucket caches after the first step, for assert_plans_kept."""
    plans = {}
    for step in range(steps):
        x = batch(seed, step, features)
        loss_of(ma, x).backward()
        loss_of(mb, x).backward()
        oa.step()
        if clip is not None:
            norm = clip_torch(mb, clip)
            assert float(norm) > clip, f"step {step}: norm {float(norm)} does not clip"
            if hasattr(oa, "last_grad_norm"):  # the global norm, on every rank
                torch.testing.assert_close(oa.last_grad_norm, norm, rtol=1e-6, atol=0)
        ob.step()
        ma.zero_grad()
        mb.zero_grad()
        if step == 0:
            cache = getattr(oa, "_bucket_cache", None)  # a ZeRO wrapper has none
            plans = list(cache.caches) if cache is not None else []
    return plans


def assert_plans_kept(opt, plans: list) -> None:
    """New grad DTensors every step (FSDP2), or new specs (TP): the bucket cache is
    reused all the same."""
    kept = len(opt._bucket_cache.caches) == len(plans) and all(map(operator.is_, opt._bucket_cache.caches, plans))
    assert plans and kept, "the bucket cache was rebuilt"
