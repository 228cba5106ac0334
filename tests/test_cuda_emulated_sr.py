"""The CUDA kernels do not round stochastically yet: their rules' ops refuse
rounding keys with an error that says so, before any kernel runs or anything is
written (fusedopt's optimizers send such CUDA params to the plain-torch
reference). Runs csrc/cuda's host code under the CUDA emulation."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

HYPER = {"adam": [0.9, 0.999, 1e-8, 0.0, 1.0, 0.0], "lion": [0.9, 0.99, 0.1]}


def refused_case(rule):
    p = ed.device_tensor(torch.randn(300).to(torch.bfloat16))
    g = ed.device_tensor(torch.randn(300).to(torch.bfloat16))
    states = [ed.device_tensor(torch.rand(300)) for _ in range(2 if rule == "adam" else 1)]
    counters = [ed.device_tensor(torch.full((), 2.0))] if rule == "adam" else []
    key = ed.device_tensor(torch.tensor([5, 1]))
    before = [t.clone() for t in (p, *states, *counters, key)]
    ed.clear_launch_log()
    with pytest.raises(RuntimeError, match="stochastic rounding is not implemented by the CUDA kernels"):
        getattr(ed.ops(), rule + "_")([p], [g], states, counters, [], HYPER[rule], None, 1e-3, None, None, None,
                                      None, 0.0, rounding_keys=[key], rounding_offsets=[0])
    assert not ed.launch_log()
    for t, old in zip((p, *states, *counters, key), before):
        assert torch.equal(t, old)


@pytest.mark.parametrize("rule", ["adam", "lion"])
def test_cuda_ops_refuse_rounding_keys_before_any_write(cuda_emu, rule):
    cuda_emu.run(refused_case, rule=rule)
