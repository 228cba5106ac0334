"""csrc/cuda's Adam/AdamW kernels and host code, run on the CPU under the CUDA
emulation (tests/cuda_emu), against the CPU kernels bit for bit: every
param/grad/state dtype the kernels dispatch, amsgrad, maximize, both weight
decays, master weights, clipping by norm and by value under a GradScaler's
scale, a tensor lr, the found_inf skip; each with one list misaligned for the
vector loads (1-3 elements into its block) beside aligned ones, on the first
and last tensors (the element-by-element path), the middle one aligned (the
vector path, and its one-element tail in a second chunk).

Each case runs in the emulation worker (conftest.py's cuda_emu)."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from emu_twins import DTYPES, Twins, adam_call, controls, step_both, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

# a tail shorter than a pack; one chunk and one element (the second chunk is
# shorter than a pack); one element short of a chunk
SIZES = (3, 65537, 65535)


def _configs():
    """Every (param, grad, state) dtype combination the kernels take, the
    options rotated across them so that each value of each option meets
    several dtypes."""
    out = []
    for p in ("f32", "bf16", "f16"):
        for g in sorted({p, "f32"}):
            for s in ("f32", "bf16", "f16"):
                i = len(out)
                out.append(dict(param=p, grad=g, state=s, amsgrad=i % 2 == 0, maximize=i % 3 == 1,
                                decoupled=i % 4 != 3, master=p != "f32" and i % 4 in (0, 3),
                                misaligned=("grads", "states", "params")[i % 3], offset=1 + i % 3,
                                max_value=0.0 if i % 5 else 2.5))
    return out


CONFIGS = _configs()


def _lists(param, grad, state, amsgrad, master, misaligned, offset):
    P, G, S = DTYPES[param], DTYPES[grad], DTYPES[state]
    t = Twins()
    at = {k: [offset, 0, offset] if k == misaligned else 0 for k in ("params", "grads", "states")}
    masters = values(SIZES, 0, torch.float32)
    t.add("params", [m.to(P) for m in masters], at["params"])
    if master:
        t.add("masters", masters, at["params"])
    t.add("grads", values(SIZES, 100, G), at["grads"])
    t.add("exp_avgs", values(SIZES, 200, S, scale=1e-3), at["states"])
    t.add("exp_avg_sqs", values(SIZES, 300, S, positive=True, scale=1e-3), at["states"])
    if amsgrad:
        t.add("max_exp_avg_sqs", values(SIZES, 400, S, positive=True, scale=1e-3), at["states"])
    t.add("steps", [torch.full((), 3.0) for _ in SIZES])
    return t


def adam_case(param, grad, state, amsgrad, maximize, decoupled, master, misaligned, offset, max_value):
    t = _lists(param, grad, state, amsgrad, master, misaligned, offset)
    controls(t, sumsq=4.0)
    for _ in range(2):
        step_both(t, adam_call, amsgrad=amsgrad, maximize=maximize, decoupled=decoupled, max_value=max_value)
    t.assert_same("params", "exp_avgs", "exp_avg_sqs", "steps", *(("max_exp_avg_sqs",) if amsgrad else ()),
                  *(("masters",) if master else ()))
    assert all(float(s) == 5.0 for s in t.emu["steps"])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "{param}-{grad}-{state}-{misaligned}{offset}".format(**c))
def test_adam_matches_the_cpu_kernels(cuda_emu, config):
    cuda_emu.run(adam_case, **config)


def lr_tensor_case(dtype_name):
    t = _lists("f32", "f32", "f32", False, False, "grads", 2)
    for side in (t.emu, t.cpu):
        side["lr_tensor"] = torch.tensor(0.003, dtype=DTYPES.get(dtype_name, torch.float64))
    step_both(t, adam_call, lr=0.5, weight_decay=0.0)  # lr read from the tensor, not this float
    t.assert_same("params", "exp_avgs", "exp_avg_sqs", "steps")


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
def test_a_tensor_lr(cuda_emu, dtype_name):
    cuda_emu.run(lr_tensor_case, dtype_name=dtype_name)


def skip_case(flag):
    t = _lists("bf16", "f32", "bf16", True, True, "states", 1)
    before = {k: [x.clone() for x in v] for k, v in t.emu.items()}
    controls(t, sumsq=4.0, found_inf=flag)
    ed.clear_launch_log()
    step_both(t, adam_call, amsgrad=True)
    # the kernels ran (every block looked at found_inf) and wrote nothing
    assert ed.kernel_launches("rule_kernel<fusedopt::AdamRule") and ed.kernel_launches("advance_scalars_kernel")
    for name, old in before.items():
        for x, y in zip(t.emu[name], old):
            assert torch.equal(x, y), name
    t.assert_same("params", "masters", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "steps")


@pytest.mark.parametrize("flag", [1.0, 2.0])  # GradScaler sums per-device flags: any nonzero skips
def test_found_inf_skips_the_step_on_the_device(cuda_emu, flag):
    cuda_emu.run(skip_case, flag=flag)


def refusal_case():
    # the CUDA entry point refuses what the CPU one refuses, with its message,
    # before it writes anything (the exception crosses ASan-checked host code)
    t = _lists("f32", "f32", "f32", False, False, "grads", 1)
    for side in (t.emu, t.cpu):
        side["exp_avgs"] = side["exp_avgs"][:2]
    before = [x.clone() for x in t.emu["params"]]
    messages = []
    for ops, side in ((ed.ops(), t.emu), (torch.ops.fusedopt, t.cpu)):
        with pytest.raises(RuntimeError, match=r"states must hold 2 lists of 3 tensors \(6\), got 5") as err:
            adam_call(ops, side)
        messages.append(str(err.value).split("fusedopt: ", 1)[1])
    assert messages[0] == messages[1]
    assert all(torch.equal(x, y) for x, y in zip(t.emu["params"], before))
    assert all(float(s) == 3.0 for s in t.emu["steps"])


def test_a_bad_call_is_refused_as_on_the_cpu(cuda_emu):
    cuda_emu.run(refusal_case)
