"""Stochastic rounding is independent of sharding: a DTensor param placed
Shard(0) (FSDP2's placement) or Replicate over two ranks gets, on each rank's
local shard, exactly the bits the unsharded param gets on those elements (the
shard keys its elements by their global indices). Ranks run as processes of
torch's fake process group (tests/sr_shard_worker.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedopt

dist = pytest.importorskip("torch.distributed")
WORKER = Path(__file__).resolve().parent / "sr_shard_worker.py"


@pytest.mark.skipif(not dist.is_available(), reason="torch without torch.distributed")
@pytest.mark.parametrize("placement", ["shard0", "replicate"])
def test_shards_get_the_unsharded_bits(tmp_path, placement):
    g = torch.Generator().manual_seed(5)
    full = torch.randn(10, 37, generator=g).to(torch.bfloat16)  # 5 rows of 37: shard 1 starts mid-Philox-group
    grad = torch.randn(10, 37, generator=g).to(torch.bfloat16)
    p = torch.nn.Parameter(full.clone())
    opt = fusedopt.AdamW([p], lr=1e-2, stochastic_rounding=True, seed=3)
    for _ in range(2):
        p.grad = grad.clone()
        opt.step()
    locals_ = []
    for rank in range(2):
        out = str(tmp_path / f"rank{rank}.pt")
        torch.save({"param": full, "grad": grad}, out + ".in")
        subprocess.run([sys.executable, str(WORKER), str(rank), placement, out], check=True, timeout=300)
        locals_.append(torch.load(out))
    if placement == "shard0":
        got = torch.cat(locals_)
        assert torch.equal(got.view(torch.int16), p.detach().view(torch.int16))
    else:
        for local in locals_:
            assert torch.equal(local.view(torch.int16), p.detach().view(torch.int16))
