"""One rank of test_sr_sharding: a bf16 param placed Shard(0) over a 2-rank mesh
of torch's fake process group (no communication), stepped by fusedopt.AdamW with
stochastic rounding; saves the rank's local shard. Run as a script, one process
per rank (a process's device meshes outlive a re-initialized process group)."""

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.testing._internal.distributed.fake_pg import FakeStore

import fusedopt


def main(rank: int, placement: str, out: str) -> None:
    data = torch.load(out + ".in")
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    full, grad = data["param"], data["grad"]
    rows = full.shape[0] // 2
    lo, hi = (0, rows) if rank == 0 else (rows, full.shape[0])
    place = [Shard(0)] if placement == "shard0" else [Replicate()]
    cut = (lambda t: t[lo:hi]) if placement == "shard0" else (lambda t: t)

    def dt(t):
        return DTensor.from_local(cut(t).clone(), mesh, place, shape=full.shape, stride=full.stride())

    p = torch.nn.Parameter(dt(full))
    opt = fusedopt.AdamW([p], lr=1e-2, stochastic_rounding=True, seed=3)
    for _ in range(2):
        p.grad = dt(grad)
        opt.step()
    torch.save(p._local_tensor.detach().clone(), out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
