"""csrc/cuda's SGD kernels and host code under the CUDA emulation
(tests/cuda_emu), against the CPU kernels bit for bit: no momentum, momentum
with dampening and nesterov, the first step (the buffer starts as the grad,
whatever the buffer held), L2 decay, maximize, master weights, every param/grad/
state dtype, clipping under a GradScaler's scale, the found_inf skip; one list
misaligned beside aligned ones. Cases run in the emulation worker."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from emu_twins import DTYPES, Twins, controls, sgd_call, step_both, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

SIZES = (1, 65536, 65538)  # a single element; exactly one chunk; a chunk and a two-element tail


def _configs():
    """Every param/grad dtype pair, each state dtype, momentum on and off with
    and without master weights, nesterov, dampening, decay, maximize."""
    rows = [
        # param, grad, state, momentum, dampening, nesterov, weight_decay, maximize, master, misaligned, max_value
        ("f32", "f32", "f32", 0.9, 0.0, True, 0.01, True, False, "grads", 0.7),
        ("bf16", "bf16", "bf16", 0.9, 0.1, False, 0.01, False, False, "states", 0.0),
        ("bf16", "f32", "f16", 0.9, 0.5, False, 0.0, True, True, "params", 0.0),
        ("f16", "f16", "f32", 0.0, 0.0, False, 0.01, False, True, "grads", 0.0),
        ("f16", "f32", "bf16", 0.9, 0.0, True, 0.01, True, True, "states", 0.7),
        ("f32", "f32", "f32", 0.0, 0.0, False, 0.01, True, False, "params", 0.0),
        ("bf16", "f32", "bf16", 0.0, 0.0, False, 0.0, False, False, "grads", 0.0),
        ("f16", "f16", "f16", 0.9, 0.1, False, 0.01, False, False, "params", 0.0),
    ]
    keys = ("param", "grad", "state", "momentum", "dampening", "nesterov", "weight_decay", "maximize", "master",
            "misaligned", "max_value")
    return [dict(zip(keys, row), offset=1 + i % 3) for i, row in enumerate(rows)]


CONFIGS = _configs()


def _lists(param, grad, state, momentum, master, misaligned, offset, garbage_buffers=True):
    P, G, S = DTYPES[param], DTYPES[grad], DTYPES[state]
    t = Twins()
    # the middle tensor misaligned (element by element), the others aligned (vector loads)
    at = {k: [0, offset, 0] if k == misaligned else 0 for k in ("params", "grads", "states")}
    masters = values(SIZES, 0, torch.float32)
    t.add("params", [m.to(P) for m in masters], at["params"])
    if master:
        t.add("masters", masters, at["params"])
    t.add("grads", values(SIZES, 100, G), at["grads"])
    if momentum:
        # what an empty_like buffer may hold: the first step must not read it
        fill = values(SIZES, 200, S, scale=1e30) if garbage_buffers else [torch.zeros(n, dtype=S) for n in SIZES]
        t.add("bufs", fill, at["states"])
        t.add("first", [torch.ones((), dtype=torch.bool) for _ in SIZES])
    return t


def sgd_case(param, grad, state, momentum, dampening, nesterov, weight_decay, maximize, master, misaligned, offset,
             max_value):
    t = _lists(param, grad, state, momentum, master, misaligned, offset)
    controls(t, sumsq=9.0)
    kw = dict(momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
              maximize=maximize, max_value=max_value)
    for step in range(2):  # the first step starts each buffer, the second applies momentum
        step_both(t, sgd_call, **kw)
        t.assert_same("params", *(("masters",) if master else ()), *(("bufs", "first") if momentum else ()))
        if momentum:
            assert not any(bool(f) for f in t.emu["first"])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "{param}-{grad}-{state}-m{momentum}-{misaligned}{offset}".format(**c))
def test_sgd_matches_the_cpu_kernels(cuda_emu, config):
    cuda_emu.run(sgd_case, **config)


def skipped_first_step_case():
    # a first step skipped on the device leaves the buffers and the flags as
    # they were; the next applied step still starts the buffers from the grads
    t = _lists("f32", "f32", "f32", 0.9, False, "states", 3)
    before = {k: [x.clone() for x in t.emu[k]] for k in ("params", "bufs", "first")}
    controls(t, sumsq=9.0, found_inf=1.0)
    ed.clear_launch_log()
    step_both(t, sgd_call)
    assert ed.kernel_launches("rule_kernel<fusedopt::SgdRule") and ed.kernel_launches("advance_scalars_kernel")
    for k, old in before.items():
        assert all(torch.equal(x, y) for x, y in zip(t.emu[k], old)), k
    controls(t, sumsq=9.0, found_inf=0.0)
    step_both(t, sgd_call, nesterov=True)
    t.assert_same("params", "bufs", "first")


def test_a_skipped_first_step_leaves_no_trace(cuda_emu):
    cuda_emu.run(skipped_first_step_case)
