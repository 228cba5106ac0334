"""Plain-tensor data parallelism on 2 ranks: DDP (grads already all-reduced, the
local norm is the global one) and ZeroRedundancyOptimizer (each rank steps part
of the params; norm_group makes the clip global), against DDP + torch's
clip_grad_norm_ + AdamW."""

from __future__ import annotations

import copy
import pickle
import warnings

import torch
import torch.distributed as dist
from torch._dynamo.testing import CompileCounterWithBackend
from torch.nn.parallel import DistributedDataParallel as DDP

import fusedopt
from dist_common import assert_same, mlp, scenario, tol, train_pair
from dist_fsdp import HYPER, MAX_NORM


def _twins():
    base = mlp()
    return DDP(copy.deepcopy(base)), DDP(copy.deepcopy(base))


def _local_norm_warnings(caught) -> list:
    return [w for w in caught if "norm_group" in str(w.message)]


@scenario("ddp_clip_matches_torch_and_warns_once", slow=True)
def ddp(ctx) -> None:
    for norm_group in (None, "local"):
        ma, mb = _twins()
        oa = fusedopt.AdamW(ma.parameters(), max_grad_norm=MAX_NORM, norm_group=norm_group, **HYPER["AdamW"])
        ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_pair(ctx.rank, ma, oa, mb, ob, 3, MAX_NORM)
        assert_same(ma, oa, mb, ob)
        expected = 1 if norm_group is None else 0  # 'local' says the norm is meant to be the rank's own
        assert len(_local_norm_warnings(caught)) == expected, [str(w.message) for w in caught]


@scenario("ddp_compiled_clip_warns_once", slow=True)
def ddp_compiled(ctx) -> None:
    """A compiled step (fullgraph) clips by the rank's own norm as the eager one
    does, and says so as the eager one does: once, unless norm_group says it is meant."""
    for norm_group in (None, "local"):
        torch._dynamo.reset()
        ma, mb = _twins()
        oa = fusedopt.AdamW(ma.parameters(), max_grad_norm=MAX_NORM, norm_group=norm_group, **HYPER["AdamW"])
        counter = CompileCounterWithBackend("eager")
        oa.step = torch.compile(oa.step, fullgraph=True, backend=counter)
        ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_pair(ctx.rank, ma, oa, mb, ob, 3, MAX_NORM)
        assert_same(ma, oa, mb, ob)
        expected = 1 if norm_group is None else 0
        assert len(_local_norm_warnings(caught)) == expected, [str(w.message) for w in caught]
        assert counter.frame_count == 1  # the step that warned was the compiled one


def _zero(model, **kw):
    from torch.distributed.optim import ZeroRedundancyOptimizer  # its import scripts torch's functional optimizers

    return ZeroRedundancyOptimizer(
        model.parameters(), optimizer_class=fusedopt.AdamW, max_grad_norm=MAX_NORM, **HYPER["AdamW"], **kw
    )


@scenario("zero_with_norm_group_matches_ddp_global_clip", slow=True)
def zero(ctx) -> None:
    for norm_group in ("world", dist.group.WORLD):
        ma, mb = _twins()
        za = _zero(ma, norm_group=norm_group)
        ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
        # ZeRO splits the params between the ranks (none is on both)
        assert 0 < len(list(za.optim.param_groups[0]["params"])) < len(list(ma.parameters()))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_pair(ctx.rank, ma, za, mb, ob, 3, MAX_NORM)
        assert not _local_norm_warnings(caught)
        for pa, pb in zip(ma.parameters(), mb.parameters()):  # ZeRO broadcasts every rank's shard
            torch.testing.assert_close(pa, pb, **tol())
        if isinstance(norm_group, str):
            # ZeRO copies forwarded keywords into its param groups and pickles
            # them to consolidate a checkpoint: the word form travels
            za.consolidate_state_dict(to=0)
            if ctx.rank == 0:
                pickle.loads(pickle.dumps(za.state_dict()))


@scenario("zero_without_norm_group_warns", slow=True)
def zero_warns(ctx) -> None:
    ma, mb = _twins()
    za = _zero(ma)
    ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_pair(ctx.rank, ma, za, mb, ob, 1, MAX_NORM)
    assert len(_local_norm_warnings(caught)) == 1, [str(w.message) for w in caught]


@scenario("zero_rank_without_params_joins_the_norm", slow=True)
def zero_empty_rank(ctx) -> None:
    """One param: rank 1's ZeRO shard is empty, yet it must join the all-reduce
    (else rank 0 hangs) and both ranks end up with torch's result."""
    base = torch.nn.Linear(4, 3, bias=False)
    ma, mb = DDP(copy.deepcopy(base)), DDP(copy.deepcopy(base))
    za = _zero(ma, norm_group="world")
    ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
    assert len(za.optim.param_groups[0]["params"]) == (1 if ctx.rank == 0 else 0)
    train_pair(ctx.rank, ma, za, mb, ob, 3, MAX_NORM, features=4)
    torch.testing.assert_close(ma.module.weight, mb.module.weight, **tol())


@scenario("zero_compiled_step_with_norm_group_matches_ddp_global_clip", slow=True)
def zero_compiled(ctx) -> None:
    """The inner optimizer's step compiled whole: the norm's all-reduce over
    norm_group is traced into the graph, so each rank clips by the global norm."""
    ma, mb = _twins()
    za = _zero(ma, norm_group="world")
    za.optim.step = torch.compile(za.optim.step, fullgraph=True)
    ob = torch.optim.AdamW(mb.parameters(), **HYPER["AdamW"])
    train_pair(ctx.rank, ma, za, mb, ob, 3, MAX_NORM)
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pa, pb, **tol())
