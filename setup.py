"""Builds fusedopt's two native libraries against the LibTorch stable ABI, and
its small CPython helper.

fusedopt/_C       CPU kernels and every op schema; always built.
fusedopt/_C_cuda  CUDA kernels; built whenever nvcc is found (FUSEDOPT_CUDA=0
                  skips it, =1 makes a missing nvcc an error), also against a
                  CPU-only torch: the stable ABI needs no CUDA build of torch.
fusedopt/_bulk_c  the bucket cache's per-tensor checks as C loops (fusedopt/_bulk.py);
                  plain C on CPython's limited API (3.10), nothing from torch.

The torch libraries use only the stable C shims of torch >= 2.10 and, of Python, only four
stable-ABI GIL functions bound weakly (csrc/python_gil.h), so one
build serves every later torch and every CPython >= 3.10 (an abi3 wheel). They
are shared objects that torch.ops.load_library opens (fusedopt/_ops.py); their
static initializers register the ops.
torch.utils.cpp_extension is not used: its CUDAExtension refuses a CPU-only
torch, and its flags pull in the unstable ATen headers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = Path("csrc")

# torch 2.10 is the ABI floor: nothing newer than its stable C shims is used.
TORCH_TARGET_VERSION = "0x020a000000000000"
TORCH_ABI_FLOOR = "2.10"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"

IS_X86 = platform.machine().lower() in ("x86_64", "amd64")

# Per-file instruction-set flags: each of these files is one copy of the CPU
# kernels, chosen at run time (csrc/cpu/isa.cpp). Nothing else gets wide-vector
# flags, so the library loads on any CPU of its architecture.
ISA_FLAGS = {
    "kernels_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"],
    "kernels_avx512.cpp": [
        "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c",
        # GCC 12 warns about _mm512_undefined_* inside its own intrinsics headers
        "-Wno-maybe-uninitialized",
    ],
}

# glibc >= 2.29 / 2.34 give pow and dlsym new default symbol versions; this
# header binds every reference, the project's and torch's headers', to the old
# ones, so the libraries keep to manylinux_2_28 whatever glibc builds them.
GLIBC_VERSIONS = ["-include", str(CSRC / "glibc_versions.h")]

# Where the old dlsym version lives on glibc < 2.34 (later, libc defines it and
# libdl.so.2 is an empty stub): named as needed, so that the libraries do not
# rely on torch's own libraries to have loaded it.
IS_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
DLSYM_LIB = ["-Wl,--push-state,--no-as-needed", "-l:libdl.so.2", "-Wl,--pop-state"] if IS_GLIBC else []

COMMON_CXX_FLAGS = [
    "-std=c++17",
    "-O3",
    "-fPIC",
    "-fvisibility=hidden",
    # Every backend evaluates the update rules operation by operation, so that
    # the instruction sets agree bit for bit; no FMA contraction.
    "-ffp-contract=off",
    "-fno-math-errno",
    "-Wall",
    "-Wno-unused-function",
    f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}",
    # old glibc symbol versions for references made by torch's headers too
    *GLIBC_VERSIONS,
    # no Python headers: the ops are registered through torch.library when
    # torch.ops.load_library opens them; the GIL functions they may call are
    # declared weak in csrc/python_gil.h
]


def _torch_dirs() -> tuple[Path, Path]:
    import torch  # the build requirement

    base = Path(torch.__file__).resolve().parent
    return base / "include", base / "lib"


def _env_flag(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def _find_nvcc() -> Path | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = _env_flag(var)
        if home and (Path(home) / "bin" / "nvcc").exists():
            return Path(home) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    default = Path("/usr/local/cuda/bin/nvcc")
    return default if default.exists() else None


def _cuda_home(nvcc: Path) -> Path:
    # nvcc may be a wrapper script on PATH; ask it where its toolkit lives.
    out = subprocess.run([str(nvcc), "--dryrun", "-x", "cu", "-c", "/dev/null", "-o", "/dev/null"],
                         capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        m = re.search(r"TOP=(\S+)", line)
        if m:
            return Path(m.group(1)).resolve()
    return nvcc.resolve().parent.parent


def _nvcc_version(nvcc: Path) -> str:
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def _cuda_archs() -> list[tuple[str, bool]]:
    """[(\"80\", with_ptx)] from TORCH_CUDA_ARCH_LIST (e.g. \"8.0;9.0+PTX\")."""
    spec = _env_flag("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS
    archs = []
    for item in re.split(r"[;\s,]+", spec):
        if not item:
            continue
        ptx = item.endswith("+PTX")
        num = item.removesuffix("+PTX")
        if not re.fullmatch(r"\d+\.\d+[af]?", num):
            raise SystemExit(f"fusedopt: cannot read {item!r} in TORCH_CUDA_ARCH_LIST")
        archs.append((num.replace(".", ""), ptx))
    return archs


def _run(cmd: list[str]) -> None:
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


class ObjectCache:
    """Compiled objects under build/objects, keyed by the compile command, the
    content of every file in csrc/, the torch built against and the compilers'
    versions: `make build` (an editable install, which compiles in a temporary
    folder) and the wheel built from the same checkout then compile once, not
    twice (a full CUDA build takes minutes on a small machine). Nothing outside
    csrc/ but torch's and the toolchains' headers is included, and those are
    named by the torch version and the compiler versions in the key."""

    KEEP_S = 86400  # objects no build has used for a day are removed

    def __init__(self, torch_include: Path):
        self.dir = ROOT / "build" / "objects"
        self.dir.mkdir(parents=True, exist_ok=True)
        tree = hashlib.sha256()
        for f in sorted(p for p in (ROOT / CSRC).rglob("*") if p.is_file()):
            tree.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
        version = torch_include.parent / "version.py"  # torch's version, git commit and CUDA
        tree.update(version.read_bytes() if version.exists() else str(torch_include).encode())
        self.tree = tree.hexdigest()
        self.compilers: dict[str, str] = {}
        self.lock = threading.Lock()

    def _compiler(self, exe: str) -> str:
        with self.lock:
            if exe not in self.compilers:
                out = subprocess.run([exe, "--version"], capture_output=True, text=True)
                self.compilers[exe] = out.stdout + out.stderr
            return self.compilers[exe]

    def compile(self, cmd: list[str]) -> None:
        assert cmd[-2] == "-o", cmd
        obj = Path(cmd[-1])
        key = hashlib.sha256(json.dumps([self.tree, self._compiler(cmd[0]), cmd[:-2]]).encode()).hexdigest()
        cached = self.dir / f"{key}.o"
        if cached.exists():
            os.utime(cached)
            print(f"{obj.name}: compiled before ({cached.name[:12]})", flush=True)
        else:
            _run(cmd)
            tmp = self.dir / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            shutil.copy2(obj, tmp)
            os.replace(tmp, cached)
        shutil.copy2(cached, obj)

    def prune(self) -> None:
        now = time.time()
        for f in self.dir.glob("*.o"):
            if now - f.stat().st_mtime > self.KEEP_S:
                f.unlink(missing_ok=True)


class BuildNative(build_ext):
    """Compiles each source with its own flags (ISA files, nvcc) in parallel."""

    def build_extensions(self) -> None:
        self.torch_include, self.torch_lib = _torch_dirs()
        self.cxx = os.environ.get("CXX", "c++")
        self.jobs = max(1, min(os.cpu_count() or 1, int(os.environ.get("MAX_JOBS", "0")) or 64))
        self.build_info = {
            "version": self.distribution.get_version(),
            "torch_abi_floor": TORCH_ABI_FLOOR,
            "cpu_isas": ["generic"] + (["avx2", "avx512"] if IS_X86 else []),
            "cuda": None,
        }
        for ext in self.extensions:
            if ext.name == "fusedopt._C":
                self._build_cpu(ext)
            elif ext.name == "fusedopt._C_cuda":
                self._build_cuda(ext)
            elif ext.name == "fusedopt._bulk_c":
                self._build_bulk(ext)
        self._write_build_info()

    # -- helpers --------------------------------------------------------------

    def _obj_dir(self, ext: Extension) -> Path:
        d = Path(self.build_temp) / ext.name.replace(".", "_")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _includes(self) -> list[str]:
        return [f"-I{self.torch_include}", f"-I{CSRC}"]

    def _compile_all(self, jobs: list[list[str]]) -> None:
        cache = ObjectCache(self.torch_include)
        with ThreadPoolExecutor(self.jobs) as pool:
            for fut in [pool.submit(cache.compile, cmd) for cmd in jobs]:
                fut.result()
        cache.prune()

    def _cxx_job(self, src: Path, obj: Path, extra: list[str]) -> list[str]:
        return [self.cxx, *COMMON_CXX_FLAGS, *self._includes(), *extra, "-c", str(src), "-o", str(obj)]

    def _link(self, ext: Extension, objects: list[Path], libs: list[str]) -> None:
        out = Path(self.get_ext_fullpath(ext.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        _run([self.cxx, "-shared", *map(str, objects), f"-L{self.torch_lib}", *libs, *DLSYM_LIB, "-o", str(out)])

    # -- the CPU library ---------------------------------------------------------

    def _build_cpu(self, ext: Extension) -> None:
        objdir = self._obj_dir(ext)
        jobs, objects = [], []
        for src in map(Path, ext.sources):
            if src.name in ISA_FLAGS and not IS_X86:
                continue
            obj = objdir / (src.stem + ".o")
            jobs.append(self._cxx_job(src, obj, list(ISA_FLAGS.get(src.name, []))))
            objects.append(obj)
        self._compile_all(jobs)
        self._link(ext, objects, ["-ltorch_cpu"])

    # -- the CPython helper ------------------------------------------------------

    def _build_bulk(self, ext: Extension) -> None:
        # plain C on CPython's limited API (abi3); no torch, no C++ runtime
        cc = os.environ.get("CC", "cc")
        objdir = self._obj_dir(ext)
        objects = []
        for src in map(Path, ext.sources):
            obj = objdir / (src.stem + ".o")
            _run([cc, "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", f"-I{sysconfig.get_paths()['include']}",
                  "-c", str(src), "-o", str(obj)])
            objects.append(obj)
        out = Path(self.get_ext_fullpath(ext.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        _run([cc, "-shared", *map(str, objects), "-o", str(out)])

    # -- the CUDA library ------------------------------------------------------

    def _build_cuda(self, ext: Extension) -> None:
        nvcc = Path(ext.nvcc)  # type: ignore[attr-defined]
        cuda_home = _cuda_home(nvcc)
        archs = _cuda_archs()
        objdir = self._obj_dir(ext)
        # for measuring kernel variants, e.g. -DFUSEDOPT_ADAM_MIN_BLOCKS=0 (csrc/cuda/adam.cu)
        extra = shlex.split(_env_flag("FUSEDOPT_NVCC_FLAGS") or "")
        gencode = []
        for num, ptx in archs:
            gencode += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
            if ptx:
                gencode += ["-gencode", f"arch=compute_{num},code=compute_{num}"]
        nvcc_flags = [
            "-std=c++17",
            "-O3",
            "--expt-relaxed-constexpr",
            # same operation-by-operation arithmetic as the CPU kernels
            "--fmad=false",
            "-Xcompiler=-fPIC,-fvisibility=hidden,-fno-math-errno",
            f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}",
            *GLIBC_VERSIONS,
            "-DUSE_CUDA",
            f"--threads={len(gencode) // 2}",
            *gencode,
            *extra,
        ]
        jobs, objects = [], []
        for src in map(Path, ext.sources):
            obj = objdir / (src.stem + ".o")
            if src.suffix == ".cu":
                jobs.append([str(nvcc), *nvcc_flags, *self._includes(), "-c", str(src), "-o", str(obj)])
            else:
                jobs.append(self._cxx_job(src, obj, ["-DUSE_CUDA", f"-I{cuda_home / 'include'}"]))
            objects.append(obj)
        self._compile_all(jobs)
        cudart_dir = next((d for d in (cuda_home / "lib64", cuda_home / "lib") if d.exists()), cuda_home / "lib64")
        # libtorch.so depends on libtorch_cuda.so in CUDA builds of torch, which
        # defines the current-stream shim; against a CPU torch it only satisfies ld.
        # Nothing is resolved from it at link time, so --as-needed (the default of
        # some linkers) would drop it: keep it explicitly.
        self._link(
            ext, objects,
            ["-Wl,--no-as-needed", "-ltorch", "-Wl,--as-needed", "-ltorch_cpu", f"-L{cudart_dir}", "-lcudart"],
        )
        self.build_info["cuda"] = {
            "version": _nvcc_version(nvcc),
            "archs": [f"sm_{num}" for num, _ in archs],
            "ptx": [f"compute_{num}" for num, ptx in archs if ptx],
        }
        if extra:
            self.build_info["cuda"]["nvcc_flags"] = extra

    def _write_build_info(self) -> None:
        # What this build targets; `python -m fusedopt info` prints it beside the
        # running process's torch, CUDA and GPU. It goes beside the libraries in
        # the build tree (wheels) and in the source tree (editable installs, which
        # copy only the libraries themselves).
        text = json.dumps(self.build_info, indent=2) + "\n"
        for folder in {Path(self.build_lib) / "fusedopt", ROOT / "fusedopt"}:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "_build_info.json").write_text(text)


def _sources(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    return sorted(str(p) for p in (CSRC / folder).glob("*") if p.suffix in suffixes)


def _extensions() -> list[Extension]:
    os.chdir(ROOT)  # sources are given relative to the project root
    cpu = Extension(
        "fusedopt._C",
        sources=[str(CSRC / "ops.cpp"), str(CSRC / "glibc_floor.cpp"), *_sources("cpu", (".cpp",))],
        py_limited_api=True,
    )
    # the per-tensor checks of reused buckets, in C (fusedopt/_bulk.py)
    bulk = Extension("fusedopt._bulk_c", sources=[str(CSRC / "python" / "bulk.c")], py_limited_api=True)
    exts = [cpu, bulk]
    want = _env_flag("FUSEDOPT_CUDA")
    if want not in (None, "0", "1"):
        raise SystemExit(f"fusedopt: FUSEDOPT_CUDA must be 0, 1 or unset, not {want!r}")
    if want == "0":
        return exts
    nvcc = _find_nvcc()
    if nvcc is None:
        if want == "1":
            raise SystemExit("fusedopt: FUSEDOPT_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
        print("fusedopt: nvcc not found, building the CPU library only", file=sys.stderr)
        return exts
    cuda = Extension(
        "fusedopt._C_cuda",
        sources=[str(CSRC / "glibc_floor.cpp"), *_sources("cuda", (".cpp", ".cu"))],
        py_limited_api=True,
    )
    cuda.nvcc = str(nvcc)  # type: ignore[attr-defined]
    exts.append(cuda)
    return exts


def _wheel_options() -> dict:
    # cp310-abi3: the libraries use nothing of Python beyond its stable ABI, so
    # any CPython >= 3.10 loads them. manylinux_2_28 (torch's own floor) on glibc Linux: the libraries need
    # nothing newer than GLIBC_2.17 / GLIBCXX_3.4.21 (csrc/glibc_floor.cpp), which
    # tests/test_wheel.py checks on every build.
    opts = {"py_limited_api": "cp310"}
    machine = platform.machine().lower()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" and machine in ("x86_64", "aarch64"):
        opts["plat_name"] = f"manylinux_2_28_{machine}"
    return {"bdist_wheel": opts}


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildNative},
    options=_wheel_options(),
)
