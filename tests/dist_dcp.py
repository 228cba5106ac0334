"""torch.distributed.checkpoint on FSDP2 (2 ranks): a checkpoint fusedopt saves
loads into torch.optim and the reverse, and training continues as torch would.
get_state_dict must see the same structure from both (DTensor states laid out
like their params, a plain step tensor)."""

from __future__ import annotations

import torch

from dist_common import assert_same, batch, fsdp, fused, loss_of, mlp, scenario, torch_cls
from dist_fsdp import HYPER


def _steps(ctx, model, opt, start, n):
    for step in range(start, start + n):
        loss_of(model, batch(ctx.rank, step)).backward()
        opt.step()
        opt.zero_grad()


def _structure(sd) -> dict:
    """What a checkpoint holds, without values: key -> (kind, placements)."""
    out = {}
    for fqn, st in sd["state"].items():
        for key, v in st.items():
            out[(fqn, key)] = (type(v).__name__, tuple(getattr(v, "placements", ())), v.dtype)
    groups = [sorted(k for k in g if k != "params") for g in sd["param_groups"]]
    return {"state": out, "groups": groups}


def dcp_roundtrip(ctx, name: str, saver: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    save_cls, load_cls = (fused(name), torch_cls(name)) if saver == "fusedopt" else (torch_cls(name), fused(name))
    ma = fsdp(mlp())
    oa = save_cls(ma.parameters(), **HYPER[name])
    _steps(ctx, ma, oa, 0, 3)
    model_sd, optim_sd = get_state_dict(ma, oa)
    # the twin optimizer of the other library, trained the same way: same structure
    mt = fsdp(mlp())
    ot = load_cls(mt.parameters(), **HYPER[name])
    _steps(ctx, mt, ot, 0, 3)
    assert _structure(optim_sd) == _structure(get_state_dict(mt, ot)[1])
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(ctx.dir))

    mb = fsdp(mlp(seed=1))  # other weights: the load must bring the saved ones
    ob = load_cls(mb.parameters(), **HYPER[name])
    model_sd, optim_sd = get_state_dict(mb, ob)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(ctx.dir))
    set_state_dict(mb, ob, model_state_dict=state["model"], optim_state_dict=state["optim"])
    assert_same(mb, ob, ma, oa, rtol=0, atol=0)  # loaded exactly
    # both continue: the loaded optimizer goes on as the saving one does
    _steps(ctx, ma, oa, 3, 2)
    _steps(ctx, mb, ob, 3, 2)
    assert_same(mb, ob, ma, oa)


for _name in ("AdamW", "SGD"):
    for _saver in ("fusedopt", "torch"):
        scenario(f"dcp_{_name}_saved_by_{_saver}", slow=True, name=_name, saver=_saver)(dcp_roundtrip)
