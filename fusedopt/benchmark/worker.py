"""One workload's measurements in a process of its own (the CPU runs).

What one workload leaves behind in the allocator (freed blocks, a fragmented
heap) changes where the next one's tensors land, and with them how fast every
implementation streams memory; a fresh process per measurement keeps the
workloads independent of their order.

    python -m fusedopt.benchmark.worker SPEC.json OUT.json   (run by run.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import fusedopt

from .measure import measure
from .steps import STEPS
from .workloads import WORKLOADS


def in_fresh_process(spec: dict) -> dict:
    """Measures spec's steps on its workload in a child interpreter that
    imports the same fusedopt; returns step -> measure()'s result."""
    here = str(Path(fusedopt.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([here] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        res = subprocess.run([sys.executable, "-m", "fusedopt.benchmark.worker", str(spec_path), str(out_path)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            why = "killed by signal %d (out of memory?)" % -res.returncode if res.returncode < 0 else \
                f"exit status {res.returncode}"
            tail = "\n".join(res.stdout.strip().splitlines()[-15:])
            return {"error": f"the measurement process failed ({why})", "output": tail}
        return json.loads(out_path.read_text())


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    wl = WORKLOADS[spec["workload"]]
    result = {s: measure(STEPS[s], wl, spec["names"][s], spec["device"], spec["rounds"], spec["reps"])
              for s in spec["steps"]}
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
