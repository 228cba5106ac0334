"""The compiled step's hyperparameters in device memory (fusedopt/optim/_compile.py
hyper_args): csrc/cuda's rule kernels, under the CUDA emulation, read the
values from `hyper_tensor` (a float64 tensor on the device) and only the
structure (which values are zero) from the float list, and equal the CPU
kernels given the same values as floats, bit for bit. Adam with and without
amsgrad, SGD with momentum (nesterov, dampening, weight decay)."""

import pytest
import torch

import emu_device as ed
import rule_calls
from conftest import requires_native_cpu
from emu_twins import Twins, controls, cpu_ops, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

SIZES = (3, 65537, 65535)


def _structure(hyper):
    return [1.0 if h != 0 else 0.0 for h in hyper]


def adam_case(amsgrad):
    t = Twins()
    t.add("params", values(SIZES, 0, torch.float32), [1, 0, 1])
    t.add("grads", values(SIZES, 100, torch.float32))
    t.add("exp_avgs", values(SIZES, 200, torch.float32, scale=1e-3))
    t.add("exp_avg_sqs", values(SIZES, 300, torch.float32, positive=True, scale=1e-3))
    if amsgrad:
        t.add("max_exp_avg_sqs", values(SIZES, 400, torch.float32, positive=True, scale=1e-3))
    t.add("steps", [torch.full((), 3.0) for _ in SIZES])
    controls(t, sumsq=4.0)
    for beta1, beta2 in ((0.9, 0.999), (0.85, 0.99)):  # values change between steps, as OneCycleLR's do
        hyper = [beta1, beta2, 1e-8, 0.1, 1.0, float(amsgrad)]
        for ops, side, hyper_tensor in ((ed.ops(), t.emu, torch.tensor(hyper, dtype=torch.float64)),
                                        (cpu_ops(), t.cpu, None)):
            # the emulated call's float list holds only the structure: the values come from the tensor
            floats = _structure(hyper) if hyper_tensor is not None else hyper
            ops.adam_(side["params"], side["grads"],
                      [*side["exp_avgs"], *side["exp_avg_sqs"], *side.get("max_exp_avg_sqs", [])], side["steps"], [],
                      floats, hyper_tensor, 0.01, None, side["grad_scale"], side["found_inf"], side["sumsq"], 1.0,
                      0.0, False)
    t.assert_same("params", "exp_avgs", "exp_avg_sqs", "steps", *(("max_exp_avg_sqs",) if amsgrad else ()))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_reads_its_hyperparameters_from_device_memory(cuda_emu, amsgrad):
    cuda_emu.run(adam_case, amsgrad=amsgrad)


def sgd_case(nesterov):
    t = Twins()
    t.add("params", values(SIZES, 0, torch.float32), [0, 2, 0])
    t.add("grads", values(SIZES, 100, torch.float32))
    t.add("bufs", [torch.zeros(n) for n in SIZES])
    t.add("first", [torch.ones((), dtype=torch.bool) for _ in SIZES])
    controls(t, sumsq=9.0)
    for momentum in (0.9, 0.8, 0.95):
        dampening = 0.0 if nesterov else 0.1
        hyper = [momentum, dampening, 0.01, float(nesterov)]
        for ops, side, hyper_tensor in ((ed.ops(), t.emu, torch.tensor(hyper, dtype=torch.float64)),
                                        (cpu_ops(), t.cpu, None)):
            floats = _structure(hyper) if hyper_tensor is not None else hyper
            rule_calls.sgd(ops.sgd_, side["params"], side["grads"], side["bufs"], side["first"], [], 0.05, None,
                           *floats[:3], bool(floats[3]), False, side["grad_scale"], side["found_inf"], side["sumsq"],
                           1.0, hyper_tensor=hyper_tensor)
        t.assert_same("params", "bufs", "first")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_reads_its_hyperparameters_from_device_memory(cuda_emu, nesterov):
    cuda_emu.run(sgd_case, nesterov=nesterov)
