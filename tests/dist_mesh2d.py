"""4 ranks on a 2x2 mesh: HSDP (Replicate, Shard) and FSDP + tensor parallel
(params on the 2-D mesh beside params on its 1-D dp sub-mesh), fusedopt against
torch's optimizers + clip_grad_norm_ under the same sharding."""

from __future__ import annotations

import torch
from torch import nn

from dist_common import assert_native, assert_plans_kept, assert_same, fused, mlp, scenario, torch_cls, train_pair
from dist_fsdp import HYPER, MAX_NORM


def _mesh(names):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (2, 2), mesh_dim_names=names)


class _TPNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(5, 6)
        self.down = nn.Linear(6, 7)
        self.norm = nn.LayerNorm(7)

    def forward(self, x):
        return self.norm(self.down(torch.relu(self.up(x))))


def _hsdp():
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(("replicate", "shard"))
    model = mlp()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            fully_shard(m, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _fsdp_tp():
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = _mesh(("dp", "tp"))
    model = _TPNet()
    parallelize_module(model, mesh["tp"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
    fully_shard(model.up, mesh=mesh["dp"])
    fully_shard(model.down, mesh=mesh["dp"])
    return fully_shard(model, mesh=mesh["dp"])  # the LayerNorm: on the 1-D dp mesh only


def mesh_parity(ctx, layout: str, name: str, groups: int) -> None:
    build = {"hsdp": _hsdp, "fsdp_tp": _fsdp_tp}[layout]
    ma, mb = build(), build()
    oa = fused(name)(ma.parameters(), max_grad_norm=MAX_NORM, **HYPER[name])
    ob = torch_cls(name)(mb.parameters(), **HYPER[name])
    # tensor-parallel ranks of one dp rank see the same batch
    assert_plans_kept(oa, train_pair(ctx.rank // 2, ma, oa, mb, ob, 3, MAX_NORM))
    assert_same(ma, oa, mb, ob)
    assert_native(oa, len(list(ma.parameters())))
    # HSDP: the shard dim only (replicas are not summed); FSDP+TP: dp+tp
    # flattened for the 2-D-sharded params, dp for the rest
    assert len(oa._reduce_groups()) == groups, oa._reduce_groups()


scenario("hsdp_AdamW_clip", world=4, slow=True, layout="hsdp", name="AdamW", groups=1)(mesh_parity)
scenario("fsdp_tp_AdamW_clip", world=4, slow=True, layout="fsdp_tp", name="AdamW", groups=2)(mesh_parity)
scenario("fsdp_tp_SGD_clip", world=4, slow=True, layout="fsdp_tp", name="SGD", groups=2)(mesh_parity)
