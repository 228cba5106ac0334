"""The emulated CUDA device as the emulated tests' cases see it, inside the
worker (tests/cuda_emu_worker.py): CPU tensors are its memory, and
torch.ops.fusedopt_emu.* are csrc/cuda's ops, kernels included, running under
the emulation (tests/cuda_emu). torch.ops.fusedopt.* on the same process's
CPU tensors are the CPU kernels the results are compared with.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os

import torch


@functools.lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """The emulated library's C entry points (already loaded as a torch library)."""
    so = ctypes.CDLL(os.environ["FUSEDOPT_EMU_LIBRARY"])
    so.fo_emu_alloc.restype = ctypes.c_void_p
    so.fo_emu_alloc.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    so.fo_emu_free.argtypes = [ctypes.c_void_p]
    so.fo_emu_select_blocks.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    so.fo_emu_launch_log.restype = ctypes.c_uint64
    so.fo_emu_launch_log.argtypes = [ctypes.c_char_p, ctypes.c_uint64]
    for name in ("fo_emu_float_to_half", "fo_emu_half_to_float", "fo_emu_float_to_bfloat16",
                 "fo_emu_bfloat16_to_float"):
        getattr(so, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return so


def ops():
    """csrc/cuda's ops on the emulated device (schemas as torch.ops.fusedopt)."""
    return torch.ops.fusedopt_emu


@functools.lru_cache(maxsize=None)
def _block_type(nbytes: int):
    # bytes that give their allocation back when the last tensor viewing them goes
    # (torch.frombuffer keeps the buffer object alive)
    return type("EmuBytes", (ctypes.c_char * nbytes,), {"__del__": lambda self: lib().fo_emu_free(ctypes.addressof(self))})


def device_tensor(values: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """`values` in emulated device memory: an allocation of exactly its bytes,
    starting `offset` elements into a 512-byte aligned block as a view into a
    cached GPU block would (the bytes before it are out of bounds). Keeps the
    layout (strides) of `values` when it is dense."""
    n, size = values.numel(), values.element_size()
    if n == 0:
        return values.clone()
    ptr = lib().fo_emu_alloc(n * size, offset * size)
    assert ptr, "the emulated allocation failed"
    flat = torch.frombuffer(_block_type(n * size).from_address(ptr), dtype=values.dtype, count=n)
    out = torch.as_strided(flat, values.shape, values.stride())
    out.copy_(values)
    assert out.data_ptr() % 512 == offset * size
    return out


def sparse_tensor(numel: int, dtype) -> torch.Tensor:
    """A zero tensor of `numel` elements in private anonymous memory: pages are
    only made when written, so a tensor of gigabytes costs what its written
    windows cost (run only the blocks over them: selected_blocks)."""
    size = torch.empty((), dtype=dtype).element_size()
    mem = mmap.mmap(-1, numel * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(mem, dtype=dtype, count=numel)  # keeps `mem` alive


def twins(values: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same values on the emulated device and as a plain CPU tensor."""
    return device_tensor(values, offset), values.clone(memory_format=torch.preserve_format)


@contextlib.contextmanager
def selected_blocks(*triples: tuple[int, int, int]):
    """Only blocks [first, end) of the listed launches (counted from here, 0 the
    next) run; launches not listed run whole. Layouts that span gigabytes of
    untouched zero pages use it to run only the blocks around the offsets they
    test."""
    flat = (ctypes.c_int64 * (3 * len(triples)))(*[v for t in triples for v in t])
    lib().fo_emu_select_blocks(flat, len(triples))
    try:
        yield
    finally:
        lib().fo_emu_select_blocks(None, 0)


def launch_log() -> list[tuple[str, tuple[int, int, int], tuple[int, int, int], int]]:
    """(kernel, grid, block, blocks run) of every launch since clear_launch_log()."""
    need = lib().fo_emu_launch_log(None, 0)
    buf = ctypes.create_string_buffer(need)
    lib().fo_emu_launch_log(buf, need)
    out = []
    for line in buf.value.decode().splitlines():
        kernel, grid, block, ran = line.split("|")
        out.append((kernel, tuple(map(int, grid.split(","))), tuple(map(int, block.split(","))), int(ran)))
    return out


def clear_launch_log() -> None:
    lib().fo_emu_clear_launch_log()


def kernel_launches(name: str) -> list[tuple[int, int, int]]:
    """The grids of the logged launches of kernels whose name contains `name`."""
    return [grid for kernel, grid, _, _ in launch_log() if name in kernel]
