"""The CUDA library, checked without a GPU: it is built and linked whenever nvcc
is available (CI has nvcc and no GPU), carries code for sm_80 and sm_90 (plus
PTX), resolves only torch's C shims and the CUDA runtime from outside, and its
host-side chunking logic is correct."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import fusedopt
from elf_tools import fatbin_entries, needed, undefined_symbols

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


def test_cuda_library_carries_sm80_sm90_and_ptx():
    lib = _cuda_library()
    entries = fatbin_entries(lib)
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
    foreign = []
    for kind, name, version in undefined_symbols(lib):
        if kind == "w":
            continue  # weak: optional, resolved or not
        if version.startswith(("GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_")):
            continue  # the C and C++ runtimes every extension uses
        if version.startswith("libcudart"):
            continue
        if name.startswith(("aoti_torch_", "torch_")):
            continue  # torch's stable C shims
        foreign.append(f"{name}@{version}" if version else name)
    assert not foreign, f"symbols from outside torch's shims and the CUDA runtime: {foreign}"
    # the stream comes through the shim
    assert any(name == "aoti_torch_get_current_cuda_stream" for _, name, _ in undefined_symbols(lib))
    deps = needed(lib)
    # libtorch.so brings libtorch_cuda.so (which defines the stream shim) in CUDA builds of torch
    assert "libtorch.so" in deps and any(d.startswith("libcudart.so.") for d in deps)


def test_cpu_library_has_no_cuda_dependency():
    found = sorted(PACKAGE.glob("_C.*so"))
    if not found:
        pytest.skip("the CPU library is not built in this installation")
    deps = needed(found[0])
    assert not any("cudart" in d or "torch_cuda" in d for d in deps), deps


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


def test_every_launch_goes_through_launch_kernel():
    # the emulation (tests/cuda_emu) replaces that one launch with its own; a
    # launch written anywhere else would not compile there, or not run
    sources = [p for p in (ROOT / "csrc" / "cuda").iterdir() if p.suffix in (".cu", ".cuh", ".cpp", ".h")]
    found = {p.name: p.read_text().count("<<<") for p in sources}
    assert {k: v for k, v in found.items() if v} == {"launch_kernel.cuh": 1}
