"""What is timed: the steps, and the entries (implementations) each compares.

  adamw   one AdamW step alone, on params whose grads are already there
  amp     the whole AMP step: unscale + inf check + clip(1.0) + AdamW + scale
          update (amp_pipelines.py)
  compile the AdamW step under torch.compile (inductor): fusedopt's compiled
          step (fullgraph=True) against torch's "compiled optimizer", with both
          eager steps beside them
  adagrad one Adagrad step: fusedopt's against torch's fused and foreach ones
  lion    one Lion step: fusedopt's against lion-pytorch's (per tensor,
          foreach, Triton)

Each entry builds a runner from params (with grads): calling it runs one step;
reset() puts back what a step consumed (the scaled grads), untimed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import amp_pipelines
from .implementations import IMPLEMENTATIONS, Implementation



class _OptimizerStep:
    def __init__(self, opt):
        self.opt = opt

    def __call__(self):
        self.opt.step()

    def reset(self):
        pass  # an AdamW step leaves the grads as they were


@dataclass(frozen=True)
class Entry:
    name: str
    label: str  # the column title in tables
    impl: Implementation  # the AdamW inside; its availability is the entry's
    build: Callable[[list, str], object]  # (params, device) -> runner
    # True: the row shows fusedopt's native kernels, so without them it is left
    # out (the fusedopt-reference row shows the fallback)
    native_only: bool = False
    highlight: bool = False  # fusedopt's own way, in bold in the markdown tables


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    short: str  # the plot's panel title
    bytes_per_param: int  # the floor every entry's GB/s is computed on
    bytes_about: str
    state_bytes_per_param: int  # what one entry keeps resident per fp32 param
    entries: dict[str, Entry]
    baseline: str = "torch-fused"  # every ratio is to it, measured in the same rounds


def _optimizer_entry(name: str, label: str, **kw) -> Entry:
    impl = IMPLEMENTATIONS[name]
    return Entry(name, label, impl, lambda ps, device: _OptimizerStep(impl.make(ps)), **kw)


def _idiom_entry(name: str, label: str) -> Entry:
    impl = IMPLEMENTATIONS[name]
    return Entry(name, label, impl, lambda ps, device: amp_pipelines.torch_idiom(ps, impl.make(ps), device))


ADAMW = Step(
    "adamw",
    "One AdamW step",
    "AdamW step alone",
    28,
    "28 bytes per fp32 parameter: read p, g, m, v; write p, m, v",
    16,  # p, g, m, v
    {e.name: e for e in (
        _optimizer_entry("torch-fused", "torch fused"),
        _optimizer_entry("torch-foreach", "torch foreach"),
        _optimizer_entry("fusedopt", "fusedopt", native_only=True, highlight=True),
        _optimizer_entry("fusedopt-reference", "fusedopt (plain-torch fallback)"),
        _optimizer_entry("deepspeed-cpu-adam", "DeepSpeed CPUAdam"),
        _optimizer_entry("apex-fused-adam", "apex FusedAdam"),
        _optimizer_entry("te-fused-adam", "TransformerEngine FusedAdam"),
    )},
)

AMP = Step(
    "amp",
    "The whole AMP step: unscale + inf check + clip(1.0) + AdamW + scale update",
    "AMP step: unscale + clip + AdamW",
    32,
    "32 bytes per fp32 parameter, the floor of the fused two-pass step: read g once "
    "for the inf check and the norm, then read p, g, m, v and write p, m, v",
    20,  # p, g, m, v and the scaled grads put back before each repetition
    {e.name: e for e in (
        _idiom_entry("torch-fused", "torch idiom, AdamW(fused)"),
        _idiom_entry("torch-foreach", "torch idiom, AdamW(foreach)"),
        Entry("fusedopt", "fusedopt fused loop", IMPLEMENTATIONS["fusedopt"], amp_pipelines.fused_loop,
              highlight=True),
        Entry("fusedopt-idiom", "torch idiom, fusedopt's classes", IMPLEMENTATIONS["fusedopt"],
              amp_pipelines.fusedopt_idiom),
        _idiom_entry("deepspeed-cpu-adam", "torch idiom, DeepSpeed CPUAdam"),
        _idiom_entry("apex-fused-adam", "torch idiom, apex FusedAdam"),
        _idiom_entry("te-fused-adam", "torch idiom, TransformerEngine FusedAdam"),
    )},
)

class _CompiledStep(_OptimizerStep):
    """opt.step compiled by torch.compile (inductor). The first call traces and
    compiles (the runner reports its time); the later ones run the graph."""

    def __init__(self, opt, fullgraph: bool):
        import torch

        super().__init__(opt)
        # an entry rebuilt every round (memory permitting it only one at a time)
        # is a new optimizer for dynamo each time: keep its graphs under the limit
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.compiled = torch.compile(opt.step, fullgraph=fullgraph)

    def __call__(self):
        self.compiled()


def _compiled_entry(name: str, label: str, impl_name: str, fullgraph: bool, **kw) -> Entry:
    impl = IMPLEMENTATIONS[impl_name]
    return Entry(name, label, impl, lambda ps, device: _CompiledStep(impl.make(ps), fullgraph), **kw)


COMPILE = Step(
    "compile",
    "One AdamW step under torch.compile",
    "AdamW step, compiled",
    ADAMW.bytes_per_param,  # the same step, so the same bytes and state
    ADAMW.bytes_about,
    ADAMW.state_bytes_per_param,
    {e.name: e for e in (
        # torch's recommended compiled optimizer: torch.compile of its step (which
        # breaks the graph around itself, so no fullgraph)
        _compiled_entry("torch-compiled", "torch compiled", "torch-foreach", fullgraph=False),
        _compiled_entry("fusedopt-compiled", "fusedopt compiled", "fusedopt", fullgraph=True, native_only=True,
                        highlight=True),
        _optimizer_entry("fusedopt", "fusedopt (eager)", native_only=True),
        _optimizer_entry("torch-fused", "torch fused (eager)"),
    )},
    baseline="torch-compiled",
)

ADAGRAD = Step(
    "adagrad",
    "One Adagrad step",
    "Adagrad step alone",
    20,
    "20 bytes per fp32 parameter: read p, g, sum; write p, sum",
    12,  # p, g, sum
    {e.name: e for e in (
        _optimizer_entry("torch-fused-adagrad", "torch fused"),
        _optimizer_entry("torch-foreach-adagrad", "torch foreach"),
        _optimizer_entry("fusedopt-adagrad", "fusedopt", native_only=True, highlight=True),
    )},
    baseline="torch-fused-adagrad",
)

LION = Step(
    "lion",
    "One Lion step",
    "Lion step alone",
    20,
    "20 bytes per fp32 parameter: read p, g, m; write p, m",
    12,  # p, g, m
    {e.name: e for e in (
        _optimizer_entry("lion-pytorch-foreach", "lion-pytorch foreach"),
        _optimizer_entry("lion-pytorch", "lion-pytorch"),
        _optimizer_entry("lion-pytorch-triton", "lion-pytorch Triton"),
        _optimizer_entry("fusedopt-lion", "fusedopt", native_only=True, highlight=True),
    )},
    baseline="lion-pytorch-foreach",
)

STEPS: dict[str, Step] = {s.name: s for s in (ADAMW, AMP, COMPILE, ADAGRAD, LION)}
