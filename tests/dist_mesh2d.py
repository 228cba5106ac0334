"""4 ranks on a 2x2 mesh: HSDP (Replicate, Shard), FSDP + tensor parallel
(params on the 2-D mesh beside params on its 1-D dp sub-mesh) and DTensors
sharded on both dims of an unnamed mesh, fusedopt against torch's optimizers +
clip_grad_norm_ under the same sharding."""

from __future__ import annotations

import torch
from torch import nn

import fusedopt
from dist_common import (
    assert_native,
    assert_plans_kept,
    assert_same,
    batch,
    clip_torch,
    fused,
    local,
    loss_of,
    mlp,
    scenario,
    tol,
    torch_cls,
    train_pair,
)
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


@scenario("fsdp_tp_clip_grad_norm_over_two_meshes", world=4, slow=True)
def clip_two_meshes(ctx) -> None:
    """fusedopt.clip_grad_norm_ on grads on the 2-D mesh and on its dp mesh at
    once (torch's refuses to stack their norms): torch's norm put together per
    mesh, and the same clipped grads."""
    ma, mb = _fsdp_tp(), _fsdp_tp()
    x = batch(ctx.rank // 2, 0)
    loss_of(ma, x).backward()
    loss_of(mb, x).backward()
    na = fusedopt.clip_grad_norm_(ma.parameters(), MAX_NORM)
    nb = clip_torch(mb, MAX_NORM)
    torch.testing.assert_close(na.full_tensor(), nb, rtol=1e-6, atol=0)
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(local(pa.grad), local(pb.grad), **tol())


@scenario("unnamed_2d_mesh_both_dims_sharded", world=4, slow=True)
def unnamed_mesh(ctx) -> None:
    """A mesh without dim names cannot be flattened: the sum over both sharded
    dims is then one all-reduce per dim, with the same result."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2, 2))
    shapes = [(6, 4), (3, 5), (1, 2)]  # uneven, and empty on most ranks

    def params():
        torch.manual_seed(0)
        return [torch.nn.Parameter(distribute_tensor(torch.randn(s), mesh, [Shard(0), Shard(1)])) for s in shapes]

    pa, pb = params(), params()
    oa = fused("AdamW")(pa, max_grad_norm=MAX_NORM, **HYPER["AdamW"])
    ob = torch_cls("AdamW")(pb, **HYPER["AdamW"])
    for step in range(3):
        torch.manual_seed(step)  # the same global grads on every rank
        for a, b in zip(pa, pb):
            g = distribute_tensor(torch.randn(a.shape), mesh, [Shard(0), Shard(1)])
            a.grad, b.grad = g, g.clone()
        oa.step()
        norm = torch.nn.utils.clip_grad_norm_(pb, MAX_NORM).full_tensor()
        torch.testing.assert_close(oa.last_grad_norm, norm, rtol=1e-6, atol=0)
        ob.step()
    rg = oa._reduce_groups()
    assert len(rg) == 1 and len(rg[0].groups) == 2, rg  # one group, reduced dim by dim
    for a, b in zip(pa, pb):
        torch.testing.assert_close(local(a), local(b), **tol())
