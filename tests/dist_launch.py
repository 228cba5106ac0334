"""Runs distributed test scenarios: one job of N gloo ranks on 127.0.0.1 runs
many scenarios, so the suite pays the start-up of N processes once per world size.

The TCPStore the ranks meet at is served by this (the pytest) process on a port
the OS picks and that stays bound for the whole job, so no free-port guess can
race with another job on the machine. Every rank writes its results after each
scenario; a job that runs past its time limit is killed, and the scenarios it did
not report fail with the ranks' output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"


def run_job(world: int, names: list[str], timeout: float) -> dict[str, dict]:
    """{scenario: {"ok": bool, "error": str}} merged over ranks (a scenario is ok
    when every rank says so)."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, world + 1, is_master=True, timeout=timedelta(seconds=60),
                          wait_for_workers=False)
    path = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]  # scenarios; bench/
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's own sockets on the loopback too
    with tempfile.TemporaryDirectory(prefix="fusedopt-dist-") as tmp:
        procs = []
        for rank in range(world):
            cmd = [sys.executable, str(WORKER), str(rank), str(world), str(store.port), tmp, ",".join(names)]
            log = open(Path(tmp) / f"rank{rank}.log", "w")
            procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        timed_out = False
        try:
            for proc, _ in procs:
                proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            for proc, log in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
        per_rank = []
        for rank in range(world):
            path = Path(tmp) / f"rank{rank}.json"
            per_rank.append(json.loads(path.read_text()) if path.exists() else {})
        logs = "\n".join(f"--- rank {r} ---\n{(Path(tmp) / f'rank{r}.log').read_text()[-3000:]}" for r in range(world))
    results = {}
    for name in names:
        errors = []
        for rank, res in enumerate(per_rank):
            r = res.get(name)
            if r is None:
                why = "timed out" if timed_out else "exited"
                errors.append(f"rank {rank}: no result (the job {why} before reporting it)")
            elif not r["ok"]:
                errors.append(f"rank {rank}:\n{r['error']}")
        results[name] = {"ok": not errors, "error": "\n".join(errors) + ("\n" + logs if errors else "")}
    return results
