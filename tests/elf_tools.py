"""Reading the built shared objects with binutils: device code in the CUDA
fatbin, undefined symbols, symbol versions and DT_NEEDED entries."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (binutils) is needed to inspect the libraries")
    return path


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def fatbin_entries(lib: Path) -> list[tuple[int, int]]:
    """(kind, arch) of every entry of the .nv_fatbin section: kind 2 is a cubin
    (SASS for sm_<arch>), kind 1 is PTX for compute_<arch>."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fatbin"
        subprocess.run([_tool("objcopy"), "-O", "binary", "--only-section=.nv_fatbin", str(lib), str(out)], check=True)
        data = out.read_bytes()
    entries, off = [], 0
    while off + 16 <= len(data):
        magic, _version, header, size = struct.unpack_from("<IHHQ", data, off)
        assert magic == 0xBA55ED50, f"unexpected fatbin magic {magic:#x} at {off}"
        e, end = off + header, off + header + size
        while e < end:
            kind, _flags, entry_header, payload = struct.unpack_from("<HHIQ", data, e)
            arch = struct.unpack_from("<I", data, e + 28)[0]
            if kind == 2:
                # nvcc (--compress-mode=default) stores a large cubin zstd-compressed, the
                # driver inflates it at load: the rule kernels' cubins are, since the 8-bit
                # and stochastic rounding variants joined them
                head = data[e + entry_header : e + entry_header + 4]
                assert head in (b"\x7fELF", ZSTD_MAGIC), "cubin entry is neither an ELF nor zstd-compressed"
            entries.append((kind, arch))
            e += entry_header + payload
        off = (end + 7) // 8 * 8
    return entries


def undefined_symbols(lib: Path) -> list[tuple[str, str, str]]:
    """(binding, name, version) of every undefined dynamic symbol."""
    out = subprocess.run([_tool("nm"), "-D", "--undefined-only", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        kind, full = parts[-2], parts[-1]
        name, _, version = full.partition("@")
        rows.append((kind, name, version.lstrip("@")))
    return rows


def needed(lib: Path) -> list[str]:
    out = subprocess.run([_tool("readelf"), "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def required_versions(lib: Path) -> dict[str, tuple[int, ...]]:
    """The highest version of each versioned namespace (GLIBC, GLIBCXX, CXXABI, GCC)
    the library needs, as objdump's version references list them."""
    out = subprocess.run([_tool("objdump"), "-T", str(lib)], capture_output=True, text=True, check=True).stdout
    best: dict[str, tuple[int, ...]] = {}
    for ns, ver in re.findall(r"\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)\b", out):
        v = tuple(int(x) for x in ver.split("."))
        best[ns] = max(best.get(ns, v), v)
    return best


# manylinux_2_28 (PEP 600; the policy auditwheel applies): what a system with
# glibc 2.28 and GCC 8's libstdc++ provides.
MANYLINUX_2_28 = {"GLIBC": (2, 28), "GLIBCXX": (3, 4, 25), "CXXABI": (1, 3, 11), "GCC": (7, 0, 0)}
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libstdc++.so.6",
               "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
# what a wheel of fusedopt may expect from the environment besides the system
TORCH_LIBS = {"libtorch.so", "libtorch_cpu.so", "libc10.so"}
CUDA_RUNTIME = re.compile(r"^libcudart\.so\.\d+$")


def external_dependencies(lib: Path) -> list[str]:
    """DT_NEEDED entries that are neither system libraries (manylinux policy) nor
    torch's shared objects nor the CUDA runtime."""
    return [n for n in needed(lib) if n not in SYSTEM_LIBS | TORCH_LIBS and not CUDA_RUNTIME.match(n)]


def policy_violations(lib: Path, policy=MANYLINUX_2_28) -> list[str]:
    found = required_versions(lib)
    return [f"{ns}_{'.'.join(map(str, v))} > {ns}_{'.'.join(map(str, policy[ns]))}"
            for ns, v in found.items() if v > policy[ns]]
