"""FSDP2 on 2 ranks: fusedopt against torch's optimizers, clip_grad_norm_ and
GradScalers under the same sharding (uneven shards, and empty ones on rank 1)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import fusedopt
from dist_common import (
    assert_bitwise,
    assert_plans_kept,
    assert_native,
    assert_same,
    batch,
    clip_torch,
    fsdp,
    fused,
    loss_of,
    mlp,
    poison_local_grad,
    scenario,
    snapshot,
    tol,
    torch_cls,
    train_pair,
)
from fusedopt._dtensor import is_dtensor, local

HYPER = {
    "Adam": dict(lr=0.05, weight_decay=0.1, amsgrad=True),
    "AdamW": dict(lr=0.05, weight_decay=0.1),
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adagrad": dict(lr=0.05, lr_decay=0.01, weight_decay=0.01),
    "Lion": dict(lr=0.01, weight_decay=0.1),
}
MAX_NORM = 0.01  # below every step's norm here, so clipping acts on every step


def parity(ctx, name: str, clip: float | None, steps: int = 4, offload: bool = False) -> None:
    kw = dict(offload_policy=_offload()) if offload else {}
    ma, mb = fsdp(mlp(), **kw), fsdp(mlp(), **kw)
    oa = fused(name)(ma.parameters(), max_grad_norm=clip, **HYPER[name])
    ob = torch_cls(name)(mb.parameters(), **HYPER[name])
    assert_plans_kept(oa, train_pair(ctx.rank, ma, oa, mb, ob, steps, clip))
    assert_same(ma, oa, mb, ob)
    assert_native(oa, len(list(ma.parameters())))
    assert all(is_dtensor(p) for p in ma.parameters())
    if clip is not None:
        assert len(oa._reduce_groups()) == 1  # plain FSDP2: one all-reduce per step


def _offload():
    from torch.distributed.fsdp import CPUOffloadPolicy

    return CPUOffloadPolicy(pin_memory=False)  # pinning needs an accelerator


for _name in HYPER:
    scenario(f"fsdp2_{_name}", name=_name, clip=None)(parity)
    scenario(f"fsdp2_{_name}_clip", name=_name, clip=MAX_NORM)(parity)
scenario("fsdp2_cpu_offload_AdamW_clip", slow=True, name="AdamW", clip=MAX_NORM, offload=True)(parity)


def _scaler(kind: str):
    kw = dict(init_scale=2.0**8, growth_interval=2)
    if kind == "fusedopt":
        return fusedopt.GradScaler("cpu", **kw)
    if kind == "torch":
        return torch.amp.GradScaler("cpu", **kw)
    if kind == "sharded":
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler("cpu", **kw)
    return None


def _same_on_all_ranks(t: torch.Tensor, what: str) -> None:
    gathered = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, t.contiguous())
    for r, g in enumerate(gathered):
        assert torch.equal(g, gathered[0]), f"{what}: rank {r} has {g}, rank 0 {gathered[0]}"


@scenario("fsdp2_inf_on_one_rank_skips_everywhere")
def inf_on_one_rank(ctx) -> None:
    """An inf in rank 0's shard only: every rank skips, bit-identically, and
    backs off alike, whichever scaler finds it (fusedopt's in the optimizer's
    stats pass; torch's and ShardedGradScaler in their own check), with and
    without clipping."""
    for kind in ("fusedopt", "torch", "sharded"):
        for clip in (None, 1.0):
            model = fsdp(mlp())
            opt = fusedopt.AdamW(model.parameters(), lr=0.05, max_grad_norm=clip)
            scaler = _scaler(kind)
            for step in range(2):
                scaler.scale(loss_of(model, batch(ctx.rank, step))).backward()
                if step == 1:
                    before = snapshot(model, opt)
                    scale = scaler.get_scale()
                    if ctx.rank == 0:
                        poison_local_grad(model)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
            what = f"{kind} scaler, max_grad_norm={clip}"
            assert_bitwise(before, snapshot(model, opt), f"{what}: the skipped step")
            assert scaler.get_scale() == scale * 0.5, f"{what}: scale {scaler.get_scale()} after an inf, was {scale}"
            _same_on_all_ranks(torch.tensor([scaler.get_scale()]), f"{what}: scale")
            if clip is not None and kind == "fusedopt":
                assert not torch.isfinite(opt.last_grad_norm), "last_grad_norm of an overflow step"


@scenario("fsdp2_amp_pipeline_matches_torch")
def amp_pipeline(ctx) -> None:
    """fusedopt's two-pass AMP step (scaler + max_grad_norm) against torch's
    idiom (unscale_, clip_grad_norm_, step) under FSDP2, with an inf on rank 0
    at step 2, growth at every other step."""
    for ours in ("fused", "idiom"):
        ma, mb = fsdp(mlp()), fsdp(mlp())
        oa = fusedopt.AdamW(ma.parameters(), max_grad_norm=MAX_NORM if ours == "fused" else None, **HYPER["AdamW"])
        ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
        sa, sb = _scaler("fusedopt"), _scaler("torch")
        for step in range(5):
            x = batch(ctx.rank, step)
            sa.scale(loss_of(ma, x)).backward()
            sb.scale(loss_of(mb, x)).backward()
            if step == 2 and ctx.rank == 0:
                poison_local_grad(ma)
                poison_local_grad(mb)
            if ours == "idiom":  # the torch idiom on fusedopt's classes
                sa.unscale_(oa)
                fusedopt.clip_grad_norm_(ma.parameters(), MAX_NORM)
            sb.unscale_(ob)
            clip_torch(mb, MAX_NORM)
            sa.step(oa)
            sb.step(ob)
            sa.update()
            sb.update()
            assert sa.get_scale() == sb.get_scale(), f"step {step}: scale {sa.get_scale()} vs {sb.get_scale()}"
            oa.zero_grad()
            ob.zero_grad()
        assert_same(ma, oa, mb, ob)


@scenario("dtensor_clip_grad_norm_matches_torch")
def clip_grad_norm(ctx) -> None:
    for max_norm in (MAX_NORM, 1e6):
        ma, mb = fsdp(mlp()), fsdp(mlp())
        x = batch(ctx.rank, 0)
        loss_of(ma, x).backward()
        loss_of(mb, x).backward()
        na = fusedopt.clip_grad_norm_(ma.parameters(), max_norm)
        nb = torch.nn.utils.clip_grad_norm_(mb.parameters(), max_norm)
        assert type(na) is type(nb) and na.placements == nb.placements and na.dtype == nb.dtype
        torch.testing.assert_close(na.full_tensor(), nb.full_tensor(), rtol=1e-6, atol=0)
        for pa, pb in zip(ma.parameters(), mb.parameters()):
            torch.testing.assert_close(local(pa.grad), local(pb.grad), **tol())


@scenario("dtensor_grad_laid_out_unlike_its_param_is_refused")
def bad_grad_layout(ctx) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (ctx.world,))
    for grad_placement in (Replicate(), Partial()):
        p = torch.nn.Parameter(distribute_tensor(torch.randn(4, 3), mesh, [Shard(0)]))
        if grad_placement.is_partial():
            p.grad = DTensor.from_local(torch.randn(4, 3), mesh, [grad_placement], run_check=False)
        else:
            p.grad = distribute_tensor(torch.randn(4, 3), mesh, [grad_placement])
        for opt in (fusedopt.AdamW([p], max_grad_norm=1.0), fusedopt.SGD([p], lr=0.1, momentum=0.9)):
            before = local(p).clone()
            with pytest.raises(ValueError, match="laid out like its parameter"):
                opt.step()
            assert torch.equal(before, local(p)) and not opt.state


@scenario("bench_fsdp_step_runs", slow=True)
def bench_smoke(ctx) -> None:
    """The FSDP2 step benchmark (fusedopt/benchmark/fsdp_step.py) runs and
    reports every implementation, with and without clipping."""
    from fusedopt.benchmark import fsdp_step

    out = fsdp_step.run("decoder-d128-l24", rounds=1, reps=1, device=torch.device("cpu"))
    assert set(out["results"]) == {"step", "clip + step"}
    for row in out["results"].values():
        assert set(row) == {"torch-fused", "torch-foreach", "fusedopt"}
        assert all(r["median_ms"] > 0 for r in row.values())
