"""The CUDA library, checked without a GPU: it is built and linked whenever nvcc
is available (CI has nvcc and no GPU), carries code for sm_80 and sm_90 (plus
PTX), resolves only torch's C shims and the CUDA runtime from outside, and its
host-side chunking logic is correct."""

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import fusedopt

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(fusedopt.__file__).resolve().parent


def _nvcc_available() -> bool:
    if os.environ.get("FUSEDOPT_CUDA") == "0":
        return False
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    return bool(shutil.which("nvcc") or (home and Path(home, "bin", "nvcc").exists()) or Path("/usr/local/cuda/bin/nvcc").exists())


def _cuda_library() -> Path:
    found = sorted(PACKAGE.glob("_C_cuda.*so"))
    if not found:
        if _nvcc_available():
            pytest.fail("nvcc is available but fusedopt/_C_cuda was not built")
        pytest.skip("no nvcc on this machine: the CUDA library is not built")
    return found[0]


def _fatbin_entries(lib: Path) -> list[tuple[int, int]]:
    """(kind, arch) of every entry of the .nv_fatbin section: kind 2 is a cubin
    (SASS for that sm), kind 1 is PTX for that compute capability."""
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        pytest.skip("objcopy (binutils) is needed to read the fatbin")
    out = lib.parent / "fatbin.tmp" if os.access(lib.parent, os.W_OK) else Path("/tmp/fusedopt-fatbin.tmp")
    subprocess.run([objcopy, "-O", "binary", "--only-section=.nv_fatbin", str(lib), str(out)], check=True)
    data = out.read_bytes()
    out.unlink()
    entries, off = [], 0
    while off + 16 <= len(data):
        magic, _version, header, size = struct.unpack_from("<IHHQ", data, off)
        assert magic == 0xBA55ED50, f"unexpected fatbin magic {magic:#x} at {off}"
        e, end = off + header, off + header + size
        while e < end:
            kind, _flags, entry_header, payload = struct.unpack_from("<HHIQ", data, e)
            arch = struct.unpack_from("<I", data, e + 28)[0]
            if kind == 2:
                assert data[e + entry_header : e + entry_header + 4] == b"\x7fELF", "cubin entry is not an ELF"
            entries.append((kind, arch))
            e += entry_header + payload
        off = (end + 7) // 8 * 8
    return entries


def test_cuda_library_carries_sm80_sm90_and_ptx():
    lib = _cuda_library()
    entries = _fatbin_entries(lib)
    assert entries, "no device code in the CUDA library"
    sass = {arch for kind, arch in entries if kind == 2}
    ptx = {arch for kind, arch in entries if kind == 1}
    wanted = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if wanted is None:
        assert sass == {80, 90}, f"SASS for {sorted(sass)}"
        assert ptx == {90}, f"PTX for {sorted(ptx)}"
    build = fusedopt._ops.build_info()["cuda"]
    assert {f"sm_{a}" for a in sass} == set(build["archs"])
    assert {f"compute_{a}" for a in ptx} == set(build["ptx"])


def test_cuda_library_needs_only_torch_shims_and_the_cuda_runtime():
    lib = _cuda_library()
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is needed to list the undefined symbols")
    out = subprocess.run([nm, "-D", "--undefined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    foreign = []
    for line in out.splitlines():
        parts = line.split()
        kind, name = parts[-2], parts[-1]
        if kind == "w":
            continue  # weak: optional, resolved or not
        base, _, version = name.partition("@")
        if version.startswith(("GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_")):
            continue  # the C and C++ runtimes every extension uses
        if version.startswith("libcudart"):
            continue
        if base.startswith(("aoti_torch_", "torch_")):
            continue  # torch's stable C shims
        foreign.append(name)
    assert not foreign, f"symbols from outside torch's shims and the CUDA runtime: {foreign}"
    assert "aoti_torch_get_current_cuda_stream" in out  # the stream comes through the shim
    needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    # libtorch.so brings libtorch_cuda.so (which defines the stream shim) in CUDA builds of torch
    assert "[libtorch.so]" in needed and "[libcudart.so." in needed


def test_cpu_library_has_no_cuda_dependency():
    found = sorted(PACKAGE.glob("_C.*so"))
    if not found:
        pytest.skip("the CPU library is not built in this installation")
    needed = subprocess.run(["readelf", "-d", str(found[0])], capture_output=True, text=True, check=True).stdout
    assert "cudart" not in needed and "torch_cuda" not in needed


def test_chunk_tables_cover_every_chunk_once(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "chunk_table_check"
    subprocess.run(
        [cxx, "-std=c++17", "-O1", f"-I{ROOT / 'csrc'}", str(ROOT / "tests/native/chunk_table_check.cpp"), "-o", str(exe)],
        check=True,
    )
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "more than 2^31 elements" in res.stdout
