"""csrc/cuda's kernels of the rules that joined through the optimizer
descriptor (Adagrad, Lion: csrc/rules/), with their host code, under the CUDA
emulation (tests/cuda_emu), against the CPU kernels bit for bit: param/grad/
state dtypes, master weights, clipping by norm and by value under a
GradScaler's scale, maximize, the found_inf skip, one list misaligned for the
vector loads beside aligned ones. Cases run in the emulation worker."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from emu_twins import DTYPES, Twins, controls, step_both, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

SIZES = (3, 65537, 65535)
HYPER = {"adagrad": [0.01, 0.1, 1e-10], "lion": [0.9, 0.99, 0.1]}


def rule_call(ops, t: dict, *, rule, lr=0.01, maximize=False, max_norm=1.0, max_value=0.0):
    getattr(ops, rule + "_")(t["params"], t["grads"], t["states"], t.get("counters", []), t.get("masters", []),
                             HYPER[rule], None, lr, None, t.get("grad_scale"), t.get("found_inf"), t.get("sumsq"),
                             max_norm, max_value, maximize)


CONFIGS = [
    dict(rule=r, param=p, grad=g, state=s, master=m, misaligned=mis, offset=off, maximize=mx, max_value=mv)
    for r in ("adagrad", "lion")
    for (p, g, s, m, mis, off, mx, mv) in [
        ("f32", "f32", "f32", False, "grads", 1, False, 0.0),
        ("bf16", "f32", "bf16", True, "states", 2, True, 0.0),
        ("f16", "f16", "f32", False, "params", 3, False, 2.5),
        ("bf16", "bf16", "f16", False, "grads", 1, True, 2.5),
    ]
]


def _lists(rule, param, grad, state, master, misaligned, offset):
    P, G, S = DTYPES[param], DTYPES[grad], DTYPES[state]
    t = Twins()
    at = {k: [offset, 0, offset] if k == misaligned else 0 for k in ("params", "grads", "states")}
    masters = values(SIZES, 0, torch.float32)
    t.add("params", [m.to(P) for m in masters], at["params"])
    if master:
        t.add("masters", masters, at["params"])
    t.add("grads", values(SIZES, 100, G), at["grads"])
    t.add("states", values(SIZES, 200, S, positive=rule == "adagrad", scale=1e-3), at["states"])
    if rule == "adagrad":
        t.add("counters", [torch.full((), 3.0) for _ in SIZES])
    return t


def rule_case(rule, param, grad, state, master, misaligned, offset, maximize, max_value):
    t = _lists(rule, param, grad, state, master, misaligned, offset)
    controls(t, sumsq=4.0)
    for _ in range(2):
        step_both(t, rule_call, rule=rule, maximize=maximize, max_value=max_value)
        t.assert_same("params", "states", *(("masters",) if master else ()), *(("counters",) if rule == "adagrad" else ()))


@pytest.mark.parametrize("config", CONFIGS,
                         ids=lambda c: "{rule}-{param}-{grad}-{state}-{misaligned}{offset}".format(**c))
def test_rule_matches_the_cpu_kernels(cuda_emu, config):
    cuda_emu.run(rule_case, **config)


def skipped_step_case(rule):
    t = _lists(rule, "f32", "f32", "f32", False, "states", 1)
    controls(t, sumsq=4.0, found_inf=1.0)
    before = {k: [x.clone() for x in t.emu[k]] for k in t.emu if isinstance(t.emu[k], list)}
    ed.clear_launch_log()
    step_both(t, rule_call, rule=rule)
    assert ed.kernel_launches("rule_kernel<fusedopt::" + {"adagrad": "AdagradRule", "lion": "LionRule"}[rule])
    for k, old in before.items():
        assert all(torch.equal(x, y) for x, y in zip(t.emu[k], old)), k
    t.assert_same("params", "states")


@pytest.mark.parametrize("rule", ["adagrad", "lion"])
def test_a_skipped_step_changes_nothing(cuda_emu, rule):
    cuda_emu.run(skipped_step_case, rule=rule)
