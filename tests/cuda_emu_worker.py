"""Runs the emulated CUDA tests' cases in a worker process.

The emulated library is built with ASan, whose runtime must be loaded before
anything else in the process; pytest's own process was not started that way.
So a test sends its case (a module-level function and its arguments) to a
worker started with the ASan runtime preloaded, which runs it beside the real
CPU library and answers with the result or the failure's traceback. ASan and
UBSan end the worker on a finding: the test that was running fails with the
report, and the next test starts a new worker.

    python tests/cuda_emu_worker.py   (started by EmuWorker, never by hand)
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# ASan: leaks are not what this looks for (Python keeps memory to the end);
# torch frees some memory with a different call than it allocated with.
ASAN_OPTIONS = "detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=0:halt_on_error=1"
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"


def _send(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


class WorkerDied(Exception):
    pass


class EmuWorker:
    """The parent's end: one worker at a time, started on first use."""

    def __init__(self, library: Path, preload: list[str]):
        self.library = library
        self.preload = preload
        self.proc = None
        self.log = None

    def _start(self) -> None:
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.update(
            # libstdc++ too: ASan finds the C++ runtime's __cxa_throw when it
            # starts, and without it there every C++ exception would abort
            LD_PRELOAD=" ".join(self.preload),
            ASAN_OPTIONS=ASAN_OPTIONS,
            UBSAN_OPTIONS=UBSAN_OPTIONS,
            FUSEDOPT_EMU_LIBRARY=str(self.library),
            PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        )
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env)

    def _log_since(self, offset: int) -> str:
        self.log.seek(offset)
        return self.log.read().decode(errors="replace")

    def run(self, fn, **kwargs):
        """fn(**kwargs) in the worker; its return value, or AssertionError with
        the worker's traceback, or WorkerDied with what the worker printed."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        offset = self.log.seek(0, os.SEEK_END)
        try:
            _send(self.proc.stdin, (fn.__module__, fn.__name__, kwargs))
            reply = _receive(self.proc.stdout)
        except BrokenPipeError:
            reply = None
        if reply is None:
            code = self.proc.wait()
            output = self._log_since(offset)
            self.proc = None
            raise WorkerDied(f"the emulation worker died (exit {code}) running {fn.__name__}:\n{output[-20000:]}")
        status, payload = reply
        if status == "ok":
            return payload
        raise AssertionError(f"{payload}\n-- worker output --\n{self._log_since(offset)[-8000:]}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.proc = None


def _serve() -> None:
    # The protocol owns the real stdout; anything else printed (by Python or by C
    # code) goes to stderr, which the parent keeps.
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = os.fdopen(0, "rb")
    sys.path.insert(0, str(TESTS))
    import torch

    import fusedopt  # noqa: F401  (the CPU library: the reference the cases compare with)

    torch.ops.load_library(os.environ["FUSEDOPT_EMU_LIBRARY"])
    # One thread: the emulation is serial, and CI has two cores for everything.
    torch.set_num_threads(1)
    gc.freeze()  # the imports' objects: later collections skip them
    while True:
        request = _receive(requests)
        if request is None:
            return
        module, name, kwargs = request
        try:
            result = getattr(importlib.import_module(module), name)(**kwargs)
            reply = ("ok", result)
        except BaseException:  # noqa: BLE001  (reported to the parent, which fails the test)
            reply = ("error", traceback.format_exc())
        sys.stderr.flush()
        _send(protocol, reply)


if __name__ == "__main__":
    _serve()
