"""8-bit states (state_dtype="8bit") of DTensor params: FSDP2 on 2 ranks
(every rule), HSDP and FSDP + TP on a 2x2 mesh (AdamW, 4 ranks).

The quant blocks of a DTensor param are cut from each rank's local shard, so
what can be compared exactly is a single-process run whose params ARE the
local shards (plain tensors, fed the sharded run's local grads): its params,
codes and scales must be bit-identical to the sharded run's local pieces.
Against the unsharded single-process 8-bit run the blocks differ, so that
comparison is loose: the sharded 8-bit run must be about as close to the
fp32-state run as the unsharded 8-bit run is to its own fp32-state twin (same
quantization noise, cut into other blocks). The clip's norm is global and the
fp32-state run's. Checkpoints: DCP save, load into a fresh model and
optimizer, continue: bit for bit the uninterrupted run; a load under another
sharding is refused, never paired with the wrong scales."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fusedopt
from dist_common import assert_native, batch, fsdp, local, loss_of, scenario
from dist_fsdp import HYPER as FSDP_HYPER
from fusedopt._dtensor import is_dtensor
from fusedopt._quant8 import dequantize_blockwise, num_blocks, quantize_blockwise

HYPER = dict(lr=0.01, weight_decay=0.1, betas=(0.9, 0.99))
MAX_NORM = 0.05


def mlp8(seed: int = 0) -> nn.Sequential:
    """On 2 ranks: a 301x5 weight of 3 blocks per shard, uneven (755 / 750
    elements; no shard boundary on a block boundary), a 1x301 weight all on
    rank 0 (rank 1's shard is empty), and small uneven ones of one block."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 301), nn.Tanh(), nn.Linear(301, 1), nn.Linear(1, 7), nn.Tanh(), nn.Linear(7, 4))


def _optimizer(name: str, params, **kw):
    """fusedopt's `name` with 8-bit states for every param (unless kw says)."""
    hyper = HYPER if name == "AdamW" else FSDP_HYPER[name]
    return getattr(fusedopt, name)(params, **{"state_dtype": "8bit", "min_8bit_size": 0, **hyper, **kw})


def _adamw(params, **kw):
    return _optimizer("AdamW", params, **kw)


def _step(model, opt, rank, step):
    loss_of(model, batch(rank, step)).backward()
    opt.step()
    opt.zero_grad()


def _tag(p) -> list[float]:
    """The layout tag that ends each rank's scales of DTensor p (README): how
    many mesh dims shard p, then each one's tensor dim and split factor."""
    tag = []
    for placement in p.placements:
        if not placement.is_replicate():
            tag += [float(placement.dim), float(getattr(placement, "split_factor", 1))]
    return [len(tag) / 2] + tag


def _local_state(p, st) -> dict:
    """A param's state as the plain-tensor twin keeps it: the scales' local
    piece cut to the local shard's blocks (then zeros, then the layout tag)."""
    out = {}
    for key, v in st.items():
        if key.endswith("_absmax") and is_dtensor(v):
            flat = local(v).reshape(-1)
            blocks, tag = num_blocks(local(p).numel()), _tag(p)
            pad = flat[blocks:-len(tag)]
            assert torch.equal(pad, torch.zeros_like(pad)), f"{key}: padding is not zero"
            assert flat[-len(tag):].tolist() == tag, f"{key}: tag {flat[-len(tag):].tolist()}, not {tag}"
            out[key] = flat[:blocks]
        else:
            out[key] = local(v)
    return out


def _assert_bitwise(ma, oa, mb, ob, what: str) -> None:
    """Local params and every local state entry of run a equal run b's bit for bit."""
    for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
        assert torch.equal(local(pa).detach(), local(pb).detach()), f"{what}: {name}"
        sa, sb = _local_state(pa, oa.state[pa]), _local_state(pb, ob.state[pb])
        assert sorted(sa) == sorted(sb), f"{what}: {name} keys {sorted(sa)} vs {sorted(sb)}"
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), f"{what}: {name} {key}"


def _twin_bitwise(ctx, name: str, steps: int) -> None:
    """fusedopt's `name` with 8-bit states under FSDP2 against the same
    optimizer on plain params that are this rank's local shards, fed the FSDP
    run's local grads: bit for bit, params, codes and scales."""
    from torch.distributed.tensor import Shard

    model = fsdp(mlp8())
    opt = _optimizer(name, model.parameters())
    twin = [nn.Parameter(local(p).detach().clone()) for p in model.parameters()]
    opt_twin = _optimizer(name, twin)
    shards = [local(p).numel() for p in model.parameters()]
    assert any(n > 256 and n % 256 for n in shards) and (ctx.rank == 0 or 0 in shards), shards
    for step in range(steps):
        loss_of(model, batch(ctx.rank, step)).backward()
        for p, t in zip(model.parameters(), twin):
            t.grad = local(p.grad).clone()
        for o in (opt, opt_twin):
            o.step()
            o.zero_grad()
    twin_model = nn.Module()
    twin_model.params = nn.ParameterList(twin)
    _assert_bitwise(model, opt, twin_model, opt_twin, f"{name}: FSDP2 8-bit vs its local shards")
    assert_native(opt, len(shards))
    for p in model.parameters():
        for key, st in opt.state[p].items():
            if key.endswith("_absmax"):
                assert st.placements == (Shard(0),), st.placements
                width = num_blocks(-(-p.shape[0] // 2) * p[0].numel()) + 3  # (the tag: 1, 0, 1)
                assert st.shape == (2, width) and local(st).shape == (1, width), (key, st.shape)
            elif key != "step":
                assert st.placements == p.placements and st.shape == p.shape and st.dtype == torch.uint8, key


@scenario("fsdp2_8bit_matches_local_shards_and_clips_globally")
def training(ctx) -> None:
    steps = 4
    for name in FSDP_HYPER:
        _twin_bitwise(ctx, name, steps)
    # AdamW clipped, with 8-bit and with fp32 states
    clipped, fp32 = fsdp(mlp8()), fsdp(mlp8())
    opt_c = _adamw(clipped.parameters(), max_grad_norm=MAX_NORM)
    opt32 = fusedopt.AdamW(fp32.parameters(), max_grad_norm=MAX_NORM, **HYPER)
    for step in range(steps):
        x = batch(ctx.rank, step)
        for m in (clipped, fp32):
            loss_of(m, x).backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in clipped.parameters()]).full_tensor()
        assert float(norm) > MAX_NORM, f"step {step}: the clip does not act"
        for o in (opt_c, opt32):
            o.step()
            o.zero_grad()
        # the global norm: torch's of the same grads, on every rank
        torch.testing.assert_close(opt_c.last_grad_norm, norm, rtol=1e-6, atol=0)
        if step == 0:  # same params and grads: the fp32-state run's norm exactly
            assert torch.equal(opt_c.last_grad_norm, opt32.last_grad_norm)
    _loose_vs_unsharded(ctx, clipped, fp32, steps)


def _loose_vs_unsharded(ctx, model, fp32, steps) -> None:
    """The unsharded single-process runs (8-bit and fp32), on the mean loss of
    both ranks' batches (FSDP averages the ranks' grads): the sharded 8-bit
    run's distance from its fp32 twin is of the order of the unsharded one's
    (the same quantization noise, in other blocks: measured 1.00x here, both
    passes; 3x allowed), and small against how far the params moved (measured
    3%; 10% allowed)."""
    m8, m32 = mlp8(), mlp8()
    # (each rank runs them alone: the norm is the rank's own)
    o8 = _adamw(m8.parameters(), max_grad_norm=MAX_NORM, norm_group="local")
    o32 = fusedopt.AdamW(m32.parameters(), max_grad_norm=MAX_NORM, norm_group="local", **HYPER)
    for step in range(steps):
        for m, o in ((m8, o8), (m32, o32)):
            loss = sum(loss_of(m, batch(r, step)) for r in range(ctx.world)) / ctx.world
            loss.backward()
            o.step()
            o.zero_grad()
    def gap(a, b) -> float:
        full = [p.full_tensor() if is_dtensor(p) else p for p in (*a.parameters(), *b.parameters())]
        n = len(full) // 2
        return max(float((x - y).detach().abs().max()) for x, y in zip(full[:n], full[n:]))

    sharded, unsharded, moved = gap(model, fp32), gap(m8, m32), gap(m32, mlp8())
    assert unsharded > 0 and sharded > 0, (sharded, unsharded)
    assert sharded <= 3 * unsharded, f"sharded 8-bit off fp32 by {sharded}, unsharded by {unsharded}"
    assert sharded < 0.1 * moved, f"8-bit noise {sharded} against a move of {moved}"
    # the sharded and unsharded fp32-state runs agree to fp32 rounding
    for p, q in zip(fp32.parameters(), m32.parameters()):
        torch.testing.assert_close(p.full_tensor(), q.detach(), rtol=1e-5, atol=1e-6)


def _other_placements_refused(ctx) -> None:
    """The same scale shapes under other placements: a 4x2 param saved placed
    Shard(0), loaded placed Shard(1) (2x2 local shards, one block, either way).
    DCP reshards the codes and loads the scales; the step refuses before any
    write, naming both layouts."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (ctx.world,))
    torch.manual_seed(0)
    full, grad = torch.randn(4, 2), torch.randn(4, 2)
    opts = []
    for placement in (Shard(0), Shard(1)):
        p = nn.Parameter(distribute_tensor(full, mesh, [placement]))
        p.grad = distribute_tensor(grad, mesh, [placement])
        opts.append(_adamw([p]))
        opts[-1].step()
    dcp.save({"optim": opts[0].state_dict()}, checkpoint_id=str(ctx.dir / "placed"))
    sd = {"optim": opts[1].state_dict()}
    dcp.load(sd, checkpoint_id=str(ctx.dir / "placed"))
    opts[1].load_state_dict(sd["optim"])
    p = opts[1].param_groups[0]["params"][0]
    before = [local(t).clone() for t in [p, *opts[1].state[p].values()]]
    with pytest.raises(RuntimeError, match=r"another sharding .*\[dim 0 split 1\].*\[dim 1 split 1\]"):
        opts[1].step()
    assert all(torch.equal(x, local(y)) for x, y in zip(before, [p, *opts[1].state[p].values()])), "a refused step wrote"


@scenario("dcp_AdamW_8bit_roundtrip", slow=True)
def dcp_roundtrip(ctx) -> None:
    """Save after 3 steps, load into a fresh model and optimizer, continue 2:
    bit for bit the uninterrupted run. A checkpoint cannot be loaded as 8-bit
    states under another sharding (here: unsharded params): refused by name.
    fp32 DTensor states load quantized; dequantized_state_dict gives fp32
    DTensors that load back."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # (a BaseException)
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    ma = fsdp(mlp8())
    oa = _adamw(ma.parameters(), min_8bit_size=7)  # the 4- and 1-element biases keep fp32 states
    for step in range(3):
        _step(ma, oa, ctx.rank, step)
    # min_8bit_size reads the global numel: the 7x1 weight (4 / 3 here) is 8-bit
    assert local(ma[3].weight).numel() < 7 and "exp_avg_absmax" in oa.state[ma[3].weight]
    assert "exp_avg_absmax" not in oa.state[ma[5].bias]
    model_sd, optim_sd = get_state_dict(ma, oa)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(ctx.dir / "q8"))

    mb = fsdp(mlp8(seed=1))
    ob = _adamw(mb.parameters(), min_8bit_size=7)
    model_sd, optim_sd = get_state_dict(mb, ob)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(ctx.dir / "q8"))
    set_state_dict(mb, ob, model_state_dict=state["model"], optim_state_dict=state["optim"])
    _assert_bitwise(mb, ob, ma, oa, "loaded")
    for step in range(3, 5):
        _step(ma, oa, ctx.rank, step)
        _step(mb, ob, ctx.rank, step)
    _assert_bitwise(mb, ob, ma, oa, "continued")

    # another sharding: the scales' global shape differs, DCP refuses the load
    mc = mlp8(seed=1)
    oc = _adamw(mc.parameters(), min_8bit_size=7)
    model_sd, optim_sd = get_state_dict(mc, oc)
    before = [t.clone() for st in oc.state.values() for t in st.values()]
    with pytest.raises(CheckpointException, match=r"Size mismatch .* for optim\.state\.0\.weight\.exp_avg_absmax"):
        dcp.load({"optim": optim_sd}, checkpoint_id=str(ctx.dir / "q8"))
    after = [t for st in oc.state.values() for t in st.values()]
    assert all(torch.equal(x, y) for x, y in zip(before, after)), "a refused load wrote states"
    _other_placements_refused(ctx)

    # torch's fp32 DTensor states load quantized, shard by shard
    m32 = fsdp(mlp8())
    o32 = torch.optim.AdamW(m32.parameters(), **HYPER)
    _step(m32, o32, ctx.rank, 0)
    md = fsdp(mlp8())
    od = _adamw(md.parameters())
    _, sd32 = get_state_dict(m32, o32)
    set_state_dict(md, od, model_state_dict=get_state_dict(m32, o32)[0], optim_state_dict=sd32)
    for p, q in zip(md.parameters(), m32.parameters()):
        for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
            codes, scales = quantize_blockwise(local(o32.state[q][name]).contiguous(), signed)
            got = _local_state(p, od.state[p])
            assert torch.equal(got[name], codes) and torch.equal(got[name + "_absmax"], scales), name

    # dequantized_state_dict: fp32 DTensors laid out like the params, which load
    sd = fusedopt.optim.dequantized_state_dict(oa.state_dict())
    for i, p in enumerate(ma.parameters()):
        st = sd["state"][i]
        for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
            v = st[name]
            assert v.dtype == torch.float32 and v.placements == p.placements and v.shape == p.shape
            if name + "_absmax" in oa.state[p]:
                ls = _local_state(p, oa.state[p])
                assert torch.equal(local(v), dequantize_blockwise(ls[name], ls[name + "_absmax"], signed))
    me = fsdp(mlp8())
    oe = fusedopt.AdamW(me.parameters(), **HYPER)
    oe.load_state_dict(sd)
    for i, p in enumerate(me.parameters()):
        assert torch.equal(local(oe.state[p]["exp_avg"]), local(sd["state"][i]["exp_avg"]))
    # the 8-bit state_dict itself, loaded into an optimizer of fp32 states: the same values
    mg = fsdp(mlp8())
    og = fusedopt.AdamW(mg.parameters(), **HYPER)
    og.load_state_dict(oa.state_dict())
    for i, p in enumerate(mg.parameters()):
        for name in ("exp_avg", "exp_avg_sq"):
            got, want = og.state[p][name], sd["state"][i][name]
            assert "exp_avg_absmax" not in og.state[p] and got.placements == want.placements
            assert torch.equal(local(got), local(want)), name
    _step(me, oe, ctx.rank, 5)


@scenario("mesh2d_AdamW_8bit_matches_local_shards", world=4, slow=True)
def mesh2d(ctx) -> None:
    """HSDP (Replicate, Shard) and FSDP + TP (params sharded on both mesh dims,
    strided on dp) on a 2x2 mesh: 8-bit AdamW bit for bit against its local
    shards, and the scales laid out over the mesh dims that shard each param."""
    from dist_mesh2d import _fsdp_tp, _hsdp

    for build in (_hsdp, _fsdp_tp):
        model = build()
        opt = _adamw(model.parameters())
        twin = [nn.Parameter(local(p).detach().clone()) for p in model.parameters()]
        opt_twin = _adamw(twin)
        for step in range(3):
            loss_of(model, batch(ctx.rank // 2, step)).backward()  # (TP ranks of a dp rank: one batch)
            for p, t in zip(model.parameters(), twin):
                t.grad = local(p.grad).clone()
            opt.step()
            opt_twin.step()
            opt.zero_grad()
        twin_model = nn.Module()
        twin_model.params = nn.ParameterList(twin)
        _assert_bitwise(model, opt, twin_model, opt_twin, f"{build.__name__}: 8-bit vs its local shards")
        for p in model.parameters():
            scales = opt.state[p]["exp_avg_absmax"]
            sharding = [i for i, pl in enumerate(p.placements) if not pl.is_replicate()]
            assert scales.shape[:-1] == tuple(p.device_mesh.size(i) for i in sharding), (p.placements, scales.shape)
