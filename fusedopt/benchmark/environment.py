"""What a report records about the machine, the software and the code measured."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

import fusedopt
from fusedopt import _ops

from .implementations import backend_of


def cpu_description() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit() -> str | None:
    """The git commit of the fusedopt being measured when it runs from a git
    checkout (with -dirty for uncommitted changes); None for an installed
    wheel, whose version the report records instead."""
    root = Path(fusedopt.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=root)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def describe(device: str) -> dict:
    env = {
        "fusedopt": fusedopt.__version__,
        "commit": source_commit(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "backend": backend_of(device),
    }
    if device == "cpu":
        env.update(device=cpu_description(), threads=torch.get_num_threads(), cpu_isa=_ops.cpu_isa())
    else:
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(device=props.name, capability=f"sm_{props.major}{props.minor}", cuda=torch.version.cuda,
                   fusedopt_cuda_build=fusedopt.backend_info()["build"].get("cuda"))  # archs, extra nvcc flags
    return env


def headline(report: dict) -> str:
    """One line: what ran where, for tables and plots."""
    where = report["device"]
    if "threads" in report:
        where += f", {report['threads']} threads, {report['cpu_isa'] or 'no native ISA'}"
    elif "capability" in report:
        where += f" ({report['capability']}, CUDA {report['cuda']})"
    code = f"fusedopt {report['fusedopt']}" + (f" @ {report['commit']}" if report.get("commit") else "")
    return f"{where} | torch {report['torch']} | {code}"
