"""Builds the emulated CUDA library: csrc/cuda's kernels and host code compiled
by g++ as C++ against the stand-in CUDA headers of tests/cuda_emu, and linked
with the emulation's runtime (tests/cuda_emu/README.md):
  - the kernels' files (.cu) with gcc's ThreadSanitizer instrumentation, whose
    per-access hooks the runtime defines (races in shared memory, two blocks
    writing one element, and ASan's bounds check of every access), and UBSan;
  - the host code (.cpp) with ASan and UBSan;
  - the runtime itself plain (its own checks must not recurse).

The result is cached under build/cuda_emu/<hash of every input>, so an edit to
a kernel is tested by the next run without reinstalling anything, and an
unchanged checkout builds once. Test-only: nothing here is part of the wheel.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
EMU = ROOT / "tests" / "cuda_emu"
CACHE = ROOT / "build" / "cuda_emu"
KEEP = 3  # cached builds kept (the newest)

SHARED_LD = EMU / "runtime" / "shared_memory.ld"
RUNTIME = ("fiber", "launcher", "launch_control", "warp_shuffle", "access_checks", "reports", "device_memory", "api")


def _torch_target_version() -> str:
    m = re.search(r'TORCH_TARGET_VERSION = "(0x[0-9a-f]+)"', (ROOT / "setup.py").read_text())
    assert m, "setup.py no longer defines TORCH_TARGET_VERSION"
    return m.group(1)


def _common_flags() -> list[str]:
    # the product's C++ flags that decide numerics (setup.py: -ffp-contract=off,
    # matching nvcc's --fmad=false; -fno-math-errno)
    return [
        "-std=c++17", "-fPIC", "-fvisibility=hidden", "-ffp-contract=off", "-fno-math-errno",
        "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas", "-g1", "-fno-omit-frame-pointer",
        # copies of known size inline (rep movs), not through ASan's memcpy
        # interceptor: see KernelCall in the stand-in cuda_runtime.h
        "-minline-all-stringops",
        f"-I{EMU / 'include'}",
    ]


# Kernel code: every access calls a hook of the runtime (access_checks.cpp),
# __shared__ statics included; UBSan checks alignment (a misaligned vector
# load) among the rest. Not linked with TSan's runtime.
KERNEL_SANITIZE = ["-fsanitize=thread,undefined", "-fno-sanitize-recover=undefined",
                   "--param=tsan-instrument-func-entry-exit=0"]
HOST_SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
LINK_SANITIZE = ["-fsanitize=address,undefined"]


def _cxx() -> str:
    return os.environ.get("CXX", "g++")


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"emulated CUDA build failed:\n{' '.join(cmd)}\n{res.stdout}{res.stderr}")


@dataclass(frozen=True)
class EmuBuild:
    library: Path  # the torch library: torch.ops.fusedopt_emu.* (tests/cuda_emu/torch)
    runtime: Path  # the runtime alone (a static archive), for test programs

    def compile_program(self, source: Path, exe: Path) -> None:
        """A standalone program of CUDA source (a test's kernels and main), built
        like the kernels and linked with the runtime."""
        obj = exe.with_name(exe.name + "_cu.o")  # a kernels' object: shared_memory.ld gathers its statics
        _run([_cxx(), *_common_flags(), "-O1", *KERNEL_SANITIZE, "-x", "c++", "-c", str(source), "-o", str(obj)])
        _run([_cxx(), *LINK_SANITIZE, str(obj), str(self.runtime), f"-Wl,-T,{SHARED_LD}", "-o", str(exe)])


def preload() -> list[str]:
    """What a process must preload to load the library (Python is not built
    with ASan): the ASan runtime, and the C++ runtime whose __cxa_throw ASan
    intercepts when it starts (loaded later, every C++ exception would abort)."""
    out = []
    for name in ("libasan.so", "libstdc++.so"):
        path = subprocess.run([_cxx(), f"-print-file-name={name}"], capture_output=True, text=True,
                              check=True).stdout.strip()
        out.append(str(Path(path).resolve()))
    return out


def _inputs(torch_dir: Path) -> list[Path]:
    files = [p for p in CSRC.rglob("*") if p.is_file()]
    files += [p for p in EMU.rglob("*") if p.is_file()]
    return sorted(files + [Path(__file__), ROOT / "setup.py"])


def _key(torch_dir: Path) -> str:
    h = hashlib.sha256()
    version = subprocess.run([_cxx(), "--version"], capture_output=True, text=True, check=True).stdout
    h.update(version.encode())
    h.update(str(torch_dir.resolve()).encode())
    h.update((torch_dir / "version.py").read_bytes())
    for p in _inputs(torch_dir):
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build() -> EmuBuild:
    import torch

    torch_dir = Path(torch.__file__).resolve().parent
    key = _key(torch_dir)
    out = CACHE / key
    result = EmuBuild(library=out / "libfusedopt_cuda_emu.so", runtime=out / "libfo_emu_runtime.a")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the second finds it done
        if not result.library.exists():
            tmp = CACHE / f"{key}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _compile_and_link(tmp, torch_dir)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            _prune(keep=out)
    return result


def _prune(keep: Path) -> None:
    builds = sorted((p for p in CACHE.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    for old in builds[: max(0, len(builds) - (KEEP - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def _compile_and_link(out: Path, torch_dir: Path) -> None:
    common = _common_flags()
    torch_flags = [f"-I{torch_dir / 'include'}", f"-I{CSRC}", f"-DTORCH_TARGET_VERSION={_torch_target_version()}",
                   "-DUSE_CUDA"]
    jobs: list[list[str]] = []
    runtime_objs, lib_objs = [], []
    for name in RUNTIME:  # the emulation itself: not instrumented (its own checks would recurse)
        obj = out / f"runtime_{name}.o"
        jobs.append([_cxx(), *common, "-O2", "-c", str(EMU / "runtime" / f"{name}.cpp"), "-o", str(obj)])
        runtime_objs.append(obj)
    obj = out / "device_shims.o"
    jobs.append([_cxx(), *common, "-O2", "-c", str(EMU / "torch" / "device_shims.cpp"), "-o", str(obj)])
    lib_objs.append(obj)
    # csrc/cuda as setup.py builds it (every .cu and .cpp there), the .cu as C++
    for src in sorted((CSRC / "cuda").glob("*.cu")):
        obj = out / f"{src.stem}_cu.o"
        jobs.append([_cxx(), *common, "-O1", *KERNEL_SANITIZE, *torch_flags, "-x", "c++", "-c", str(src),
                     "-o", str(obj)])
        lib_objs.append(obj)
    # host code unoptimized: it runs little, and torch's headers make these the
    # slowest files to compile
    for src in sorted((CSRC / "cuda").glob("*.cpp")):
        obj = out / f"{src.stem}.o"
        jobs.append([_cxx(), *common, "-O0", *HOST_SANITIZE, *torch_flags,
                     "-include", str(EMU / "torch" / "registration.h"), "-c", str(src), "-o", str(obj)])
        lib_objs.append(obj)
    for src in (EMU / "torch" / "schemas.cpp", EMU / "probes.cpp"):
        obj = out / f"{src.stem}.o"
        jobs.append([_cxx(), *common, "-O0", *HOST_SANITIZE, *torch_flags, "-c", str(src), "-o", str(obj)])
        lib_objs.append(obj)
    # the kernels' files first: the longest jobs, so that the cores finish together
    jobs.sort(key=lambda cmd: not cmd[-1].endswith("_cu.o"))
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for fut in [pool.submit(_run, cmd) for cmd in jobs]:
            fut.result()
    archive = out / "libfo_emu_runtime.a"
    _run(["ar", "rcs", str(archive), *map(str, runtime_objs)])
    library = out / "libfusedopt_cuda_emu.so"
    _run([_cxx(), "-shared", *LINK_SANITIZE, *map(str, lib_objs), str(archive), f"-Wl,-T,{SHARED_LD}",
          f"-L{torch_dir / 'lib'}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(library)])
    _check_shared_memory(library)


def _shared_names() -> set[str]:
    """The names csrc/cuda declares __shared__."""
    names = set()
    for src in (CSRC / "cuda").glob("*.cu*"):
        names.update(re.findall(r"__shared__\s+[\w:<>, ]+?\s+(\w+)\s*[\[;]", src.read_text()))
    return names


def _check_shared_memory(library: Path) -> None:
    """Everything the link put in the emulated shared memory must be a
    __shared__ variable: the runtime poisons that range at every block, which
    would wreck any other static of the kernels' files."""
    table = subprocess.run(["objdump", "-t", "-C", str(library)], capture_output=True, text=True, check=True).stdout
    wanted = _shared_names()
    strays = []
    for line in table.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[3] == "fo_emu_shared" and parts[2] == "O":
            name = parts[5].rsplit("::", 1)[-1]
            if name not in wanted:
                strays.append(parts[5])
    if strays:
        raise RuntimeError("statics of csrc/cuda's .cu files that are not __shared__ would be taken for shared "
                           f"memory by the emulation (tests/cuda_emu/runtime/shared_memory.ld): {strays}")
