"""Identical inputs on the emulated CUDA device and on the CPU, and the ops of
both called alike, for the cases of tests/test_cuda_emulated_*.py (which run in
the emulation worker). The two sides must agree bit for bit wherever
tests/cuda_common.py says a GPU and the CPU do.
"""

from __future__ import annotations

import torch

import emu_device as ed
import rule_calls
from cuda_common import cpu_values

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.bool: torch.uint8,
         torch.int64: torch.int64, torch.uint8: torch.uint8}


def assert_same_bits(emu, cpu, what: str) -> None:
    """Equal bit for bit (a NaN equals the same NaN)."""
    for i, (e, c) in enumerate(zip(emu, cpu, strict=True)):
        assert e.dtype == c.dtype and e.shape == c.shape, (what, i, e.dtype, c.dtype, e.shape, c.shape)
        eb, cb = e.view(_BITS[e.dtype]), c.view(_BITS[c.dtype])
        if not torch.equal(eb, cb):
            bad = (eb != cb).nonzero()
            first = tuple(bad[0].tolist())
            raise AssertionError(f"{what}[{i}]: {len(bad)} of {e.numel()} elements differ from the CPU kernels, "
                                 f"the first at {first}: {e[first].item()!r} (emulated CUDA) != {c[first].item()!r}")


def cpu_ops():
    return torch.ops.fusedopt


class Twins:
    """Named lists of tensors, one copy in emulated device memory (`emu`), one
    on the CPU (`cpu`); a list may sit `offset` elements into its blocks."""

    def __init__(self):
        self.emu: dict[str, list[torch.Tensor]] = {}
        self.cpu: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, values: list[torch.Tensor], offset=0) -> None:
        """`offset`: one for every tensor, or a list of one per tensor."""
        offsets = offset if isinstance(offset, (list, tuple)) else [offset] * len(values)
        pairs = [ed.twins(v, o) for v, o in zip(values, offsets, strict=True)]
        self.emu[name] = [e for e, _ in pairs]
        self.cpu[name] = [c for _, c in pairs]

    def scalar(self, name: str, value: float, dtype=torch.float32) -> None:
        self.emu[name] = torch.tensor([value], dtype=dtype)
        self.cpu[name] = torch.tensor([value], dtype=dtype)

    def side(self, which: str) -> dict:
        return self.emu if which == "emu" else self.cpu

    def assert_same(self, *names: str) -> None:
        for name in names:
            e, c = self.emu[name], self.cpu[name]
            if isinstance(e, torch.Tensor):
                e, c = [e], [c]
            assert_same_bits(e, c, name)


def values(sizes, seed: int, dtype, positive=False, scale=1.0) -> list[torch.Tensor]:
    return [cpu_values(n, seed + k, dtype, positive=positive, scale=scale) for k, n in enumerate(sizes)]


def adam_call(ops, t: dict, *, lr=0.01, weight_decay=0.1, decoupled=True, amsgrad=False,
              maximize=False, max_norm=1.0, max_value=0.0):
    rule_calls.adam(ops.adam_, t["params"], t["grads"], t["exp_avgs"], t["exp_avg_sqs"], t.get("max_exp_avg_sqs", []),
                    t["steps"], t.get("masters", []), lr, t.get("lr_tensor"), 0.9, 0.999, 1e-8, weight_decay,
                    decoupled, amsgrad, maximize, t.get("grad_scale"), t.get("found_inf"), t.get("sumsq"), max_norm,
                    max_value)


def sgd_call(ops, t: dict, *, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False,
             maximize=False, max_norm=1.0, max_value=0.0):
    rule_calls.sgd(ops.sgd_, t["params"], t["grads"], t.get("bufs", []), t.get("first", []), t.get("masters", []), lr,
                   None, momentum, dampening, weight_decay, nesterov, maximize, t.get("grad_scale"),
                   t.get("found_inf"), t.get("sumsq"), max_norm, max_value)


def step_both(twins: Twins, call, **kw) -> None:
    """One step of `call` on each side: the emulated CUDA kernels, the CPU kernels."""
    call(ed.ops(), twins.emu, **kw)
    call(cpu_ops(), twins.cpu, **kw)


def controls(twins: Twins, sumsq: float, scale: float = 1024.0, found_inf: float = 0.0) -> None:
    """GradScaler's scale, found_inf, and a sum of squares given to both sides
    (the norm's clip coefficient then comes from the same bits on both)."""
    twins.scalar("grad_scale", scale)
    twins.scalar("found_inf", found_inf)
    twins.scalar("sumsq", sumsq)
