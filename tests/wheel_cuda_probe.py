"""Run by tests/torch_matrix.py and tests/test_wheel.py with the python of each
venv that holds the installed wheel beside a build of torch (no GPU needed).
Prints, as JSON, what fusedopt, the dispatcher and the dynamic linker say about
the CUDA library, for wheel_venv.check_cuda_probe to judge."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import torch

import fusedopt
from fusedopt import _ops

SHIM = "aoti_torch_get_current_cuda_stream"  # undefined in _C_cuda, defined by CUDA builds of torch


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _dladdr():
    for lib in (None, "libdl.so.2"):  # in libc from glibc 2.34, in libdl before
        try:
            return ctypes.CDLL(lib).dladdr
        except (OSError, AttributeError):
            continue
    raise OSError("dladdr not found")


def defining_object(lib: Path, symbol: str) -> str | None:
    """The shared object that defines `symbol` as seen from `lib` (which is
    already loaded: CDLL hands back the same handle; dlsym searches the library
    and its dependencies, the scope its own relocations resolved in)."""
    try:
        addr = ctypes.cast(getattr(ctypes.CDLL(str(lib)), symbol), ctypes.c_void_p).value
    except AttributeError:
        return None
    info = _DlInfo()
    if not _dladdr()(ctypes.c_void_p(addr), ctypes.byref(info)):
        return None
    return Path(info.dli_fname.decode()).name


def main() -> None:
    cuda_lib = sorted(Path(fusedopt.__file__).parent.glob("_C_cuda.*so"))
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("fusedopt::"))
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    print(json.dumps({
        "fusedopt": fusedopt.__file__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_lib": {"loaded": _ops.CUDA_LIB.loaded, "reason": _ops.CUDA_LIB.reason},
        "shim_from": defining_object(cuda_lib[0], SHIM) if cuda_lib and _ops.CUDA_LIB.loaded else None,
        # every op the dispatcher knows in the namespace, with its kernels
        "ops": {n: {k: has(n, k) for k in ("CPU", "CUDA", "CompositeExplicitAutograd")} for n in names},
        # the ops the package itself calls for tensors (the list ops, the native plans')
        "bound": sorted(f"fusedopt::{n}" for n in (*_ops.LIST_OPS, *_ops.PLAN_OPS)),
    }))


if __name__ == "__main__":
    main()
