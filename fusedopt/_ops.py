"""Loads the native libraries and decides, per device, which backend runs the ops.

Backends, best first:
  "cuda"        fusedopt/_C_cuda (multi-tensor CUDA kernels)
  "cpu-native"  fusedopt/_C      (multi-tensor SIMD CPU kernels)
  "reference"   fusedopt/reference.py (plain torch; works everywhere)

FUSEDOPT_DISABLE_NATIVE=1 sends everything to the reference; FUSEDOPT_DISABLE_CUDA=1
only CUDA tensors. The CPU library defines the op schemas, so the CUDA one is only
loaded after it, and only where torch itself was built with CUDA.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import torch

from . import _bulk, reference

_PACKAGE_DIR = Path(__file__).resolve().parent
_CPU_ISAS = ("generic", "avx2", "avx512")


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class LibraryStatus:
    loaded: bool
    reason: str


def _load(stem: str) -> LibraryStatus:
    """Opens fusedopt/<stem>.*.so; its static initializers register the ops."""
    found = sorted(_PACKAGE_DIR.glob(f"{stem}.*so")) + sorted(_PACKAGE_DIR.glob(f"{stem}.*pyd"))
    if not found:
        return LibraryStatus(False, f"fusedopt.{stem} is not built in this installation")
    try:
        torch.ops.load_library(str(found[0]))
    except (OSError, RuntimeError) as exc:
        return LibraryStatus(False, f"fusedopt.{stem} failed to load: {exc}")
    return LibraryStatus(True, f"loaded {found[0].name}")


def _load_cpu() -> LibraryStatus:
    if _env_on("FUSEDOPT_DISABLE_NATIVE"):
        return LibraryStatus(False, "disabled by FUSEDOPT_DISABLE_NATIVE")
    return _load("_C")


def _load_cuda(cpu: LibraryStatus) -> LibraryStatus:
    if _env_on("FUSEDOPT_DISABLE_NATIVE"):
        return LibraryStatus(False, "disabled by FUSEDOPT_DISABLE_NATIVE")
    if _env_on("FUSEDOPT_DISABLE_CUDA"):
        return LibraryStatus(False, "disabled by FUSEDOPT_DISABLE_CUDA")
    if not cpu.loaded:
        return LibraryStatus(False, "needs the CPU library, which holds the op schemas")
    if torch.version.cuda is None:
        return LibraryStatus(False, "this torch is not a CUDA build")
    built = build_info().get("cuda")
    if built is None:
        return LibraryStatus(False, "this installation was built without CUDA")
    if str(built["version"]).split(".")[0] != torch.version.cuda.split(".")[0]:
        return LibraryStatus(
            False,
            f"built for CUDA {built['version']}, but torch uses CUDA {torch.version.cuda} "
            "(one wheel serves one CUDA major)",
        )
    return _load("_C_cuda")


@lru_cache(maxsize=1)
def build_info() -> dict:
    """What this installation was built for (written by setup.py)."""
    path = _PACKAGE_DIR / "_build_info.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


CPU_LIB = _load_cpu()
CUDA_LIB = _load_cuda(CPU_LIB)

if CPU_LIB.loaded:
    requested = os.environ.get("FUSEDOPT_CPU_ISA", "").strip()
    if requested and requested not in _CPU_ISAS:
        import warnings

        warnings.warn(
            f"FUSEDOPT_CPU_ISA={requested!r} is not one of {_CPU_ISAS}; using the best the CPU supports",
            stacklevel=2,
        )


@lru_cache(maxsize=None)
def _cuda_device_support(index: int) -> tuple[bool, str]:
    """Whether the CUDA library carries code this GPU can run."""
    major, minor = torch.cuda.get_device_capability(index)
    cc = major * 10 + minor
    built = build_info().get("cuda") or {}
    sass = [int(a.removeprefix("sm_").rstrip("af")) for a in built.get("archs", [])]
    ptx = [int(a.removeprefix("compute_").rstrip("af")) for a in built.get("ptx", [])]
    # A cubin runs on later minors of its major; PTX is compiled for any later GPU.
    if any(a // 10 == major and a <= cc for a in sass) or any(a <= cc for a in ptx):
        return True, f"sm_{cc} is served by the build ({', '.join(built.get('archs', []))})"
    return False, (
        f"this GPU is sm_{cc}; the build carries {', '.join(built.get('archs', [])) or 'no code'}"
        f"{' + PTX ' + ', '.join(built.get('ptx', [])) if built.get('ptx') else ''}; "
        "rebuild with TORCH_CUDA_ARCH_LIST including it"
    )


# device -> backend name, filled on first use. What serves a device is fixed
# for the life of the process; the cache also lets a torch.compile'd step look
# the answer up (a dict read) instead of tracing the CUDA capability checks.
_BACKENDS: dict[torch.device, str] = {}


def backend(device: torch.device) -> str:
    """The backend that serves tensors on `device`."""
    known = _BACKENDS.get(device)
    if known is not None:
        return known
    if device.type == "cpu":
        name = "cpu-native" if CPU_LIB.loaded else "reference"
    elif device.type == "cuda" and CUDA_LIB.loaded:
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = "cuda" if _cuda_device_support(index)[0] else "reference"
    else:
        name = "reference"
    if device.type == "cpu" or device.index is not None:
        _BACKENDS[device] = name
    return name


class _NativeOps:
    """The native ops, called through their default overloads (an overload
    packet resolves its overload on every call, a cost paid per step): the AMP
    ops and every rule's list op ``<rule>_`` (csrc/rules/registry.h), found by
    name on first use."""

    def __getattr__(self, name: str):
        op = getattr(torch.ops.fusedopt, name).default
        setattr(self, name, op)  # later reads are plain attribute reads
        return op


# the rules the native library was built with
RULES: tuple[str, ...] = tuple(torch.ops.fusedopt.rules().split(",")) if CPU_LIB.loaded else ()
# the list ops: the AMP ops and each rule's update
LIST_OPS: tuple[str, ...] = ("grad_stats_", "unscale_", "clip_value_", *(r + "_" for r in RULES))
_NATIVE = _NativeOps() if CPU_LIB.loaded else None
if _NATIVE is not None:
    # resolved now: a compiled step reads plain attributes, never traces __getattr__
    for _name in LIST_OPS:
        getattr(_NATIVE, _name)

# The native-plan ops (fusedopt/_native_plan.py), served by both native libraries
# (they dispatch on their grads, found_inf or anchor), called through their
# default overloads; each rule's plan maker is ``<rule>_plan_make``.
PLAN_OPS = (*(r + "_plan_make" for r in RULES), "plan_bind", "plan_grad_stats_", "plan_step_", "plan_unscale_",
            "plan_release", "plan_free")
PLANS = SimpleNamespace(**{n: getattr(torch.ops.fusedopt, n).default for n in PLAN_OPS}) if CPU_LIB.loaded else None


def plan_maker(rule: str):
    """The rule's plan maker, ``<rule>_plan_make``."""
    return getattr(PLANS, rule + "_plan_make")


def ops_for(device: torch.device):
    """The op implementations for tensors on `device`: the native ops or the
    reference functions, which take the same arguments."""
    return reference if backend(device) == "reference" else _NATIVE


def cpu_isa() -> str | None:
    """The instruction set the CPU kernels run with, or None without them."""
    return torch.ops.fusedopt.cpu_isa() if CPU_LIB.loaded else None


def backend_info() -> dict:
    """Which backend serves each device and why, and what the build targets."""
    devices = {
        "cpu": {
            "backend": backend(torch.device("cpu")),
            "reason": CPU_LIB.reason,
            "isa": cpu_isa(),
        }
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            dev = torch.device("cuda", index)
            if CUDA_LIB.loaded:
                ok, why = _cuda_device_support(index)
                reason = why if ok else f"falling back: {why}"
            else:
                reason = CUDA_LIB.reason
            devices[str(dev)] = {
                "backend": backend(dev),
                "reason": reason,
                "name": torch.cuda.get_device_name(index),
                "capability": "sm_{}{}".format(*torch.cuda.get_device_capability(index)),
            }
    return {
        "devices": devices,
        "libraries": {
            "fusedopt._C": CPU_LIB.reason,
            "fusedopt._C_cuda": CUDA_LIB.reason,
            "fusedopt._bulk_c": _bulk.REASON,
        },
        "build": build_info(),
        "runtime": {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


# -- fake kernels: let torch.compile and opcheck trace through the ops -----------

if CPU_LIB.loaded:

    def _no_output(*args, **kwargs):
        return None

    for _name in ("grad_stats_", "unscale_", "clip_value_", *(r + "_" for r in RULES)):
        torch.library.register_fake(f"fusedopt::{_name}")(_no_output)
