"""bench/step_memory.py reads a step's peak memory from the profiler's record
of torch's allocations: a known temporary is seen at its size, and torch's
foreach AdamW (which allocates temporaries of the params' size) needs more
inside its step than its fused one."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import step_memory  # noqa: E402

sys.path.pop(0)

TEMP = 3 << 20


class _Temporary(torch.optim.Optimizer):
    """An optimizer whose step allocates one TEMP-byte buffer and frees it."""

    def __init__(self, params):
        super().__init__(params, {})

    def step(self):
        scratch = torch.empty(TEMP, dtype=torch.uint8)
        scratch.fill_(0)
        del scratch


def _measure(opt_factory):
    model = torch.nn.Linear(256, 256)
    params = list(model.parameters())
    opt = opt_factory(params)
    x = torch.randn(8, 256)

    def step():
        model(x).square().mean().backward()
        step_memory.optimizer_step(opt)
        opt.zero_grad(set_to_none=True)

    step()  # the states exist before the measured step
    return params, step_memory.measure(params, opt, step)


def test_a_known_temporary_is_seen_at_its_size():
    params, mem = _measure(_Temporary)
    assert mem["optimizer_peak_bytes"] == TEMP
    assert mem["resident_bytes"] == sum(p.numel() * 4 for p in params)
    assert mem["step_peak_bytes"] >= mem["resident_bytes"] + TEMP


def test_foreach_adamw_needs_more_than_fused_inside_its_step():
    _, foreach = _measure(lambda ps: torch.optim.AdamW(ps, foreach=True))
    params, fused = _measure(lambda ps: torch.optim.AdamW(ps, fused=True))
    n = sum(p.numel() for p in params)
    assert foreach["resident_bytes"] == fused["resident_bytes"] == n * 12 + 4 * len(params)
    assert foreach["optimizer_peak_bytes"] >= 4 * n > fused["optimizer_peak_bytes"]


def test_a_step_without_the_mark_is_refused():
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="did not call step_memory.optimizer_step"):
        step_memory.measure(list(model.parameters()), opt, lambda: None)
