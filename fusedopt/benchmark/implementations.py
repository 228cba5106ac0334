"""The implementations the benchmark compares, and whether each can run here.

AdamW: torch's own (fused, foreach), fusedopt's (the native kernels, and its
plain-torch fallback forced on), and other libraries' where they import:
DeepSpeed's CPU Adam on the CPU; apex's and TransformerEngine's FusedAdam on
CUDA. All run AdamW with the same hyperparameters on fp32 params.
Adagrad: torch's (fused, foreach) and fusedopt's. Lion: lion-pytorch's (its
per-tensor, foreach and Triton paths, where importable) and fusedopt's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

import fusedopt
from fusedopt import _ops

LR, WEIGHT_DECAY = 1e-4, 0.01


def backend_of(device: str) -> dict:
    """fusedopt's backend for `device` ("cpu-native", "cuda" or "reference",
    the plain-torch fallback) and why."""
    info = fusedopt.backend_info()["devices"]
    key = "cpu" if device == "cpu" else (device if ":" in device else "cuda:0")
    entry = info.get(key, {"backend": "reference", "reason": "no such device"})
    return {"name": entry["backend"], "native": entry["backend"] != "reference", "reason": entry["reason"]}


def _on_reference(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """`opt` with every step routed to the plain-torch reference path: what a
    build without the native libraries runs."""
    native_step = opt.step

    def step(closure=None):
        original = _ops.ops_for
        _ops.ops_for = lambda device: _ops.reference
        try:
            return native_step(closure)
        finally:
            _ops.ops_for = original

    opt.step = step
    return opt


# -- optional libraries: each importer returns the optimizer class or raises ----

def _deepspeed_cpu_adam():
    from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore[import-not-found]

    return lambda ps: DeepSpeedCPUAdam(ps, lr=LR, weight_decay=WEIGHT_DECAY, adamw_mode=True)


def _apex_fused_adam():
    from apex.optimizers import FusedAdam  # type: ignore[import-not-found]

    return lambda ps: FusedAdam(ps, lr=LR, weight_decay=WEIGHT_DECAY, adam_w_mode=True)


def _te_fused_adam():
    from transformer_engine.pytorch.optimizers import FusedAdam  # type: ignore[import-not-found]

    return lambda ps: FusedAdam(ps, lr=LR, weight_decay=WEIGHT_DECAY, adam_w_mode=True)


def _lion_pytorch(path: str):
    def importer():
        import importlib

        if path == "foreach":
            lion = importlib.import_module("lion_pytorch.foreach").Lion
            return lambda ps: lion(ps, lr=LR, weight_decay=WEIGHT_DECAY)
        if path == "triton":
            importlib.import_module("lion_pytorch.triton")  # needs triton: fails here when it is missing
        lion = importlib.import_module("lion_pytorch").Lion
        return lambda ps: lion(ps, lr=LR, weight_decay=WEIGHT_DECAY, use_triton=path == "triton")

    return importer


@dataclass(frozen=True)
class Implementation:
    name: str
    devices: tuple[str, ...]  # device types it runs on
    factory: Callable[[list], torch.optim.Optimizer] | None = None  # params -> optimizer
    library: str | None = None  # an optional library it comes from (then `importer` gives the factory)
    importer: Callable[[], Callable[[list], torch.optim.Optimizer]] | None = None

    def runs_on(self, device: str) -> bool:
        return device.split(":")[0] in self.devices

    def unavailable(self, device: str) -> str | None:
        """Why it cannot run on `device` here, or None when it can."""
        if not self.runs_on(device):
            return f"runs on {'/'.join(self.devices)} only"
        if self.importer is not None:
            return _import_failure(self.name)
        return None

    def make(self, params: list) -> torch.optim.Optimizer:
        factory = self.factory if self.importer is None else _imported(self.name)
        return factory(params)


ALL_DEVICES = ("cpu", "cuda")

IMPLEMENTATIONS: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        Implementation("torch-fused", ALL_DEVICES,
                       lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)),
        Implementation("torch-foreach", ALL_DEVICES,
                       lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, foreach=True)),
        Implementation("fusedopt", ALL_DEVICES, lambda ps: fusedopt.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY)),
        Implementation("fusedopt-reference", ALL_DEVICES,
                       lambda ps: _on_reference(fusedopt.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY))),
        Implementation("deepspeed-cpu-adam", ("cpu",), library="DeepSpeed (deepspeed.ops.adam.DeepSpeedCPUAdam)",
                       importer=_deepspeed_cpu_adam),
        Implementation("apex-fused-adam", ("cuda",), library="apex (apex.optimizers.FusedAdam)",
                       importer=_apex_fused_adam),
        Implementation("te-fused-adam", ("cuda",),
                       library="TransformerEngine (transformer_engine.pytorch.optimizers.FusedAdam)",
                       importer=_te_fused_adam),
        # Adagrad
        Implementation("torch-fused-adagrad", ALL_DEVICES,
                       lambda ps: torch.optim.Adagrad(ps, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)),
        Implementation("torch-foreach-adagrad", ALL_DEVICES,
                       lambda ps: torch.optim.Adagrad(ps, lr=LR, weight_decay=WEIGHT_DECAY, foreach=True)),
        Implementation("fusedopt-adagrad", ALL_DEVICES,
                       lambda ps: fusedopt.Adagrad(ps, lr=LR, weight_decay=WEIGHT_DECAY)),
        # Lion
        Implementation("lion-pytorch", ALL_DEVICES, library="lion-pytorch (lion_pytorch.Lion)",
                       importer=_lion_pytorch("plain")),
        Implementation("lion-pytorch-foreach", ALL_DEVICES, library="lion-pytorch (lion_pytorch.foreach.Lion)",
                       importer=_lion_pytorch("foreach")),
        Implementation("lion-pytorch-triton", ("cuda",), library="lion-pytorch (Lion(use_triton=True), triton)",
                       importer=_lion_pytorch("triton")),
        Implementation("fusedopt-lion", ALL_DEVICES, lambda ps: fusedopt.Lion(ps, lr=LR, weight_decay=WEIGHT_DECAY)),
    )
}


@lru_cache(maxsize=None)
def _import(name: str):
    try:
        return IMPLEMENTATIONS[name].importer(), None
    except Exception as exc:  # noqa: BLE001 - an optional library may fail in any way while importing
        lib = IMPLEMENTATIONS[name].library
        return None, f"{lib} is not importable here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def _import_failure(name: str) -> str | None:
    return _import(name)[1]


def _imported(name: str):
    factory, why = _import(name)
    if factory is None:
        raise RuntimeError(why)
    return factory
