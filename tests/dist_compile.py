"""FSDP2 params under torch.compile on 2 ranks: torch.compile(opt.step,
fullgraph=True) runs the step on the DTensors' local shards, with the global
clip norm's all-reduce inside the graph, and equals the eager fusedopt step bit
for bit; a whole compiled train step (forward, backward, step) equals it too;
8-bit states, which the compiled route leaves eager, still step correctly."""

from __future__ import annotations

import copy

import torch
from torch._dynamo.testing import CompileCounterWithBackend

import fusedopt
from dist_common import (
    NATIVE_OFF,
    assert_bitwise,
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
    torch_cls,
)
from dist_fsdp import HYPER, MAX_NORM  # the eager FSDP2 scenarios' settings, which these compile


def compiled_step(ctx, name: str, clip: float | None, backend: str = "aot_eager", steps: int = 4,
                  reload: bool = False) -> None:
    """fusedopt eager (a), fusedopt compiled (b) and torch's optimizer with
    torch's global clip (c) on three twins: b equals a bit for bit, and c
    within the suite's fp32 tolerance."""
    torch._dynamo.reset()
    ma, mb, mc = fsdp(mlp()), fsdp(mlp()), fsdp(mlp())
    oa = fused(name)(ma.parameters(), max_grad_norm=clip, **HYPER[name])
    ob = fused(name)(mb.parameters(), max_grad_norm=clip, **HYPER[name])
    oc = torch_cls(name)(mc.parameters(), **HYPER[name])
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(ob.step, fullgraph=True, backend=counter)
    for i in range(steps):
        if reload and i == steps - 1:
            # new state DTensors (as loading a checkpoint makes): the graph
            # must read them, not the ones it was traced with
            assert counter.frame_count == 1, counter.frame_count
            for opt in (oa, ob, oc):
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        x = batch(ctx.rank, i)
        for model in (ma, mb, mc):
            loss_of(model, x).backward()
        oa.step()
        step()
        if clip is not None:
            clip_torch(mc, clip)
        oc.step()
        assert_bitwise(snapshot(mb, ob), snapshot(ma, oa), f"step {i}")
        if clip is not None:
            assert torch.equal(ob.last_grad_norm, oa.last_grad_norm), f"step {i}: norms differ"
        for model in (ma, mb, mc):
            model.zero_grad()
    assert_same(mb, ob, mc, oc)
    if not reload:
        # one graph for every step: new FSDP2 grads each step are read afresh, not recompiled for
        assert counter.frame_count == 1, counter.frame_count


# Each scenario compiles, seconds on a 2-core machine: a few cover the rules, with
# and without the norm's collective; the slow ones (first pass only) add Adam's
# amsgrad and the eager route of 8-bit states, which test_compile.py also runs on 1 rank.
scenario("compile_fsdp2_Adam", slow=True, name="Adam", clip=None)(compiled_step)
scenario("compile_fsdp2_AdamW_clip", name="AdamW", clip=MAX_NORM, reload=True)(compiled_step)
scenario("compile_fsdp2_SGD_clip", name="SGD", clip=MAX_NORM)(compiled_step)


def _step_graphs(graphs: list) -> list:
    """The captured graphs that hold the optimizer's step: its global norm's
    all-reduce (a functional collective only the traced step issues) and, on
    the native backend, fusedopt's ops."""
    out = []
    for gm in graphs:
        targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        if any("_c10d_functional.all_reduce" in t for t in targets):
            assert NATIVE_OFF or any(t.startswith("fusedopt.") for t in targets), targets
            out.append(gm)
    return out


# torch 2.10 cannot run a compiled FSDP2 forward and backward at all (its
# backward finds an unsharded param view modified in place, with torch's own
# AdamW too); 2.13 and 2.15 can. Older releases have no such scenario.
_TORCH = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])


def compiled_train_step(ctx) -> None:
    """The whole train step compiled (forward, backward, opt.step, zero_grad),
    without fullgraph: torch breaks the graph at FSDP2's hooks (run eagerly under
    dynamo), at backward() and at zero_grad(); the step between them is one graph
    holding its kernels and the norm's all-reduce, and the training equals the
    eager one bit for bit, with no recompile after the first step."""
    torch._dynamo.reset()
    ma, mb = fsdp(mlp()), fsdp(mlp())
    oa = fusedopt.AdamW(ma.parameters(), max_grad_norm=MAX_NORM, **HYPER["AdamW"])
    ob = fusedopt.AdamW(mb.parameters(), max_grad_norm=MAX_NORM, **HYPER["AdamW"])
    graphs = []

    def capture(gm, inputs):
        graphs.append(gm)
        return gm.forward

    def train_step(x):
        loss = loss_of(mb, x)
        loss.backward()
        ob.step()
        ob.zero_grad()
        return loss

    compiled = torch.compile(train_step, backend=capture)
    for i in range(3):
        x = batch(ctx.rank, i)
        loss_of(ma, x).backward()
        oa.step()
        oa.zero_grad()
        compiled(x)
        assert_bitwise(snapshot(mb, ob), snapshot(ma, oa), f"step {i}")
        if i == 0:
            first = len(graphs)
    assert len(graphs) == first, f"recompiled: {first} graphs after the first step, {len(graphs)} after the last"
    assert len(_step_graphs(graphs)) == 1, [str(g.graph) for g in graphs]


if _TORCH >= (2, 13):
    scenario("compile_fsdp2_train_step")(compiled_train_step)


@scenario("compile_fsdp2_grad_scaler")
def compiled_step_with_a_scaler(ctx) -> None:
    """fusedopt's GradScaler drives a compiled step (fullgraph) on FSDP2 params:
    the optimizer finds infs in its stats pass and the flag is summed over the
    ranks with the norm, inside the graph; an inf in rank 0's shard only skips
    the step on every rank, and everything equals the eager step bit for bit."""
    torch._dynamo.reset()
    ma, mb = fsdp(mlp()), fsdp(mlp())
    oa = fusedopt.AdamW(ma.parameters(), max_grad_norm=MAX_NORM, **HYPER["AdamW"])
    ob = fusedopt.AdamW(mb.parameters(), max_grad_norm=MAX_NORM, **HYPER["AdamW"])
    counter = CompileCounterWithBackend("aot_eager")
    ob.step = torch.compile(ob.step, fullgraph=True, backend=counter)
    sa, sb = (fusedopt.GradScaler("cpu", init_scale=2.0**8, growth_interval=2) for _ in range(2))
    for i in range(4):
        x = batch(ctx.rank, i)
        for model, opt, scaler in ((ma, oa, sa), (mb, ob, sb)):
            scaler.scale(loss_of(model, x)).backward()
            if i == 2 and ctx.rank == 0:
                poison_local_grad(model)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        assert sa.get_scale() == sb.get_scale(), f"step {i}: scale {sa.get_scale()} vs {sb.get_scale()}"
        assert_bitwise(snapshot(mb, ob), snapshot(ma, oa), f"step {i}")
    assert sb.get_scale() == 2.0**8, sb.get_scale()  # grown at step 1, halved by the inf at step 2
    assert counter.frame_count == 1, counter.frame_count


@scenario("compile_fsdp2_8bit_states_step_eagerly", slow=True)
def compiled_8bit_steps_eagerly(ctx) -> None:
    """8-bit states of DTensor params are not taken by the compiled route: the
    compiled step runs them eagerly (a graph break, so no fullgraph) and equals
    the eager step bit for bit, with the global norm."""
    torch._dynamo.reset()
    ma, mb = fsdp(mlp()), fsdp(mlp())
    kw = dict(max_grad_norm=MAX_NORM, state_dtype="8bit", min_8bit_size=0, **HYPER["AdamW"])
    oa, ob = fusedopt.AdamW(ma.parameters(), **kw), fusedopt.AdamW(mb.parameters(), **kw)
    step = torch.compile(ob.step, backend="eager")
    for i in range(3):
        x = batch(ctx.rank, i)
        loss_of(ma, x).backward()
        loss_of(mb, x).backward()
        oa.step()
        step()
        assert_bitwise(snapshot(mb, ob), snapshot(ma, oa), f"step {i}")
        assert torch.equal(ob.last_grad_norm, oa.last_grad_norm), f"step {i}: norms differ"
        ma.zero_grad()
        mb.zero_grad()
    assert all(ob.state[p]["exp_avg"].dtype == torch.uint8 for p in mb.parameters())
