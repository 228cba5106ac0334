"""8-bit optimizer states on CUDA (csrc/cuda/rule_kernel_q8.cuh), with their
host code, under the CUDA emulation (tests/cuda_emu), against the CPU kernels
(rule_blocks_q8) bit for bit: codes, block scales, params, masters, counters
and rounding keys, for every rule (signed and unsigned maps), amsgrad, master
weights, stochastic rounding, maximize, several tensors whose sizes are not
multiples of 256 nor of the chunk (65836: two chunks, the second ending in a
partial quant block), a misaligned list beside aligned ones, two steps; a step
skipped on the device changes no code, scale, param or counter. Plans:
tests/test_cuda_emulated_plans.py ("adam amsgrad 8bit states"); more than one
launch table: tests/native/chunk_table_check.cpp. Cases run in the emulation
worker."""

from __future__ import annotations

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from emu_twins import DTYPES, Twins, controls, step_both, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

SIZES = (3, 65836, 1000)
OFFSETS = [6, 0, 131077]  # stochastic rounding: the global index of each param's first element
# per rule: its hyper list, its state lists' maps (signed or not), its counter (dtype, value)
RULES = {
    "adam": ([0.9, 0.999, 1e-8, 0.1, 1.0, 1.0], (True, False, False), (torch.float32, 3.0)),  # AdamW, amsgrad
    "sgd": ([0.9, 0.0, 0.01, 1.0], (True,), (torch.bool, False)),  # nesterov, after a first step
    "adagrad": ([0.01, 0.1, 1e-10], (False,), (torch.float32, 3.0)),
    "lion": ([0.9, 0.99, 0.1], (True,), None),
}


def rule_call(ops, t: dict, *, rule, maximize=False):
    extra = dict(rounding_keys=t["keys"], rounding_offsets=OFFSETS) if "keys" in t else {}
    getattr(ops, rule + "_")(t["params"], t["grads"], t["states"], t.get("counters", []), t.get("masters", []),
                             RULES[rule][0], None, 0.01, None, t.get("grad_scale"), t.get("found_inf"),
                             t.get("sumsq"), 1.0, 0.0, maximize, **extra)


def _lists(rule, param, grad, master=False, rounded=False, misaligned="grads"):
    from fusedopt._quant8 import quantize_blockwise

    _, signed, counter = RULES[rule]
    t = Twins()
    masters = values(SIZES, 0, torch.float32)
    t.add("params", [m.to(DTYPES[param]) for m in masters], [1, 0, 3] if misaligned == "params" else 0)
    if master:
        t.add("masters", masters)
    t.add("grads", values(SIZES, 100, DTYPES[grad]), [1, 0, 3] if misaligned == "grads" else 0)
    quantized = [quantize_blockwise(x, s) for k, s in enumerate(signed)
                 for x in values(SIZES, 200 + 10 * k, torch.float32, positive=not s, scale=1e-3)]
    # the op's state lists: every state's codes, then every state's scales
    t.add("states", [c for c, _ in quantized] + [a for _, a in quantized])
    if counter is not None:
        dtype, value = counter
        t.add("counters", [torch.full((), value, dtype=dtype) for _ in SIZES])
    if rounded:
        t.add("keys", [torch.tensor([987654321 + k, 4]) for k in range(len(SIZES))])
    return t


CONFIGS = [
    dict(rule="adam", param="f32", grad="f32"),
    dict(rule="adam", param="bf16", grad="f32", master=True, misaligned="params"),
    dict(rule="adam", param="bf16", grad="bf16", rounded=True),
    dict(rule="sgd", param="f16", grad="f16", maximize=True),
    dict(rule="adagrad", param="bf16", grad="bf16"),
    dict(rule="lion", param="f32", grad="f32"),
]


def q8_case(rule, param, grad, master=False, rounded=False, misaligned="grads", maximize=False):
    t = _lists(rule, param, grad, master, rounded, misaligned)
    controls(t, sumsq=4.0)
    names = [n for n in ("counters", "masters", "keys") if n in t.emu]
    before = [x.clone() for x in t.emu["states"]]
    for _ in range(2):
        ed.clear_launch_log()
        step_both(t, rule_call, rule=rule, maximize=maximize)
        assert ed.kernel_launches("rule_kernel_q8<"), "no emulated 8-bit kernel ran"
        t.assert_same("params", "states", *names)
    # the steps moved the states (two equal runs that changed nothing would agree too)
    assert sum(not torch.equal(x, y) for x, y in zip(t.emu["states"], before)) >= len(before) // 2


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_8bit_states_match_the_cpu_kernels(cuda_emu, config):
    cuda_emu.run(q8_case, **config)


def skipped_step_case():
    t = _lists("adam", "bf16", "bf16", rounded=True)
    controls(t, sumsq=4.0, found_inf=1.0)
    before = {k: [x.clone() for x in t.emu[k]] for k in ("params", "states", "counters", "keys")}
    ed.clear_launch_log()
    step_both(t, rule_call, rule="adam")
    assert ed.kernel_launches("rule_kernel_q8<")
    for k, old in before.items():
        assert all(torch.equal(x, y) for x, y in zip(t.emu[k], old)), k
    t.assert_same("params", "states", "counters", "keys")


def test_a_skipped_step_changes_no_code_scale_or_param(cuda_emu):
    cuda_emu.run(skipped_step_case)

