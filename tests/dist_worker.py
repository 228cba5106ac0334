"""One rank of a distributed test job (see dist_launch.py):

    dist_worker.py RANK WORLD STORE_PORT OUT_DIR scenario1,scenario2,...

Runs the named scenarios in order in one gloo process group and writes
OUT_DIR/rankR.json after each one. Every collective has a time limit, so a
scenario that desynchronizes the ranks fails instead of hanging the job.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from dist_scenarios import SCENARIOS, Ctx


def main() -> None:
    rank, world, port, out, names = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, world + 1, is_master=False, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=40))
    results = {}
    for name in names.split(","):
        t0 = time.perf_counter()
        try:
            SCENARIOS[name](Ctx(rank, world, out / name))
            results[name] = {"ok": True}
        except BaseException:  # noqa: BLE001 - reported to the test, which fails
            results[name] = {"ok": False, "error": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - t0, 2)
        (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
