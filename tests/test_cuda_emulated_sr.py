"""Stochastic rounding of bf16/fp16 params by the CUDA kernels (csrc/cuda/
rounded_store.cuh, rules.cu), with their host code, under the CUDA emulation
(tests/cuda_emu), against the CPU kernels bit for bit: every rule, bf16 and
fp16 params, grads and states of several dtypes, amsgrad, maximize, sizes that
are not multiples of the vector or of the chunk (65537: two chunks), global
offsets that start inside a group of four indices (one Philox call serves four),
a misaligned list beside aligned ones, two steps (the keys' applied steps
advance after each); a step skipped on the device changes no param, state,
counter or key. Plans: tests/test_cuda_emulated_plans.py ("bf16 stochastic
rounding"). Cases run in the emulation worker."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from emu_twins import DTYPES, Twins, controls, step_both, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

SIZES = (3, 65537, 1000)
OFFSETS = [6, 0, 131077]  # the global index of each param's first element
# per rule: its hyper list, its state lists (count), its counter (dtype, value)
RULES = {
    "adam": ([0.9, 0.999, 1e-8, 0.1, 1.0, 1.0], 3, (torch.float32, 3.0)),  # AdamW, amsgrad
    "sgd": ([0.9, 0.0, 0.01, 1.0], 1, (torch.bool, False)),  # nesterov, after a first step
    "adagrad": ([0.01, 0.1, 1e-10], 1, (torch.float32, 3.0)),
    "lion": ([0.9, 0.99, 0.1], 1, None),
}


def rule_call(ops, t: dict, *, rule, maximize=False):
    getattr(ops, rule + "_")(t["params"], t["grads"], t["states"], t.get("counters", []), [], RULES[rule][0], None,
                             0.01, None, t.get("grad_scale"), t.get("found_inf"), t.get("sumsq"), 1.0, 0.0, maximize,
                             rounding_keys=t["keys"], rounding_offsets=OFFSETS)


def _lists(rule, param, grad, state, misaligned):
    _, n_states, counter = RULES[rule]
    P, G, S = DTYPES[param], DTYPES[grad], DTYPES[state]
    t = Twins()
    at = {k: [1, 0, 3] if k == misaligned else 0 for k in ("params", "grads", "states")}
    t.add("params", values(SIZES, 0, P), at["params"])
    t.add("grads", values(SIZES, 100, G), at["grads"])
    t.add("states", [x for k in range(n_states)
                     for x in values(SIZES, 200 + 10 * k, S, positive=rule != "sgd" and k > 0 or rule == "adagrad",
                                     scale=1e-3)], at["states"])
    if counter is not None:
        dtype, value = counter
        t.add("counters", [torch.full((), value, dtype=dtype) for _ in SIZES])
    t.add("keys", [torch.tensor([1234567890123 + k, 7]) for k in range(len(SIZES))])
    return t


CONFIGS = [
    dict(rule="adam", param="bf16", grad="f32", state="f32", misaligned="params", maximize=False),
    dict(rule="sgd", param="f16", grad="f16", state="bf16", misaligned="grads", maximize=True),
    dict(rule="adagrad", param="bf16", grad="bf16", state="f32", misaligned="states", maximize=False),
    dict(rule="lion", param="f16", grad="f32", state="f16", misaligned="params", maximize=False),
]


def rounded_case(rule, param, grad, state, misaligned, maximize):
    t = _lists(rule, param, grad, state, misaligned)
    controls(t, sumsq=4.0)
    counters = ("counters",) if "counters" in t.emu else ()
    before = [x.clone() for x in t.emu["params"]]
    for step in range(2):
        ed.clear_launch_log()
        step_both(t, rule_call, rule=rule, maximize=maximize)
        assert ed.kernel_launches("rule_kernel<fusedopt::"), "no emulated CUDA kernel ran"
        t.assert_same("params", "states", "keys", *counters)
        assert [int(k[1]) for k in t.emu["keys"]] == [8 + step] * len(SIZES)
    assert all(not torch.equal(x, y) for x, y in zip(t.emu["params"], before))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "{rule}-{param}-{grad}-{state}".format(**c))
def test_rounded_stores_match_the_cpu_kernels(cuda_emu, config):
    cuda_emu.run(rounded_case, **config)


def skipped_step_case():
    t = _lists("adam", "bf16", "bf16", "f32", "params")
    controls(t, sumsq=4.0, found_inf=1.0)
    before = {k: [x.clone() for x in t.emu[k]] for k in ("params", "states", "counters", "keys")}
    ed.clear_launch_log()
    step_both(t, rule_call, rule="adam")
    assert ed.kernel_launches("rule_kernel<fusedopt::AdamRule")
    for k, old in before.items():
        assert all(torch.equal(x, y) for x, y in zip(t.emu[k], old)), k
    t.assert_same("params", "states", "counters", "keys")


def test_a_skipped_step_changes_no_param_state_or_key(cuda_emu):
    cuda_emu.run(skipped_step_case)
