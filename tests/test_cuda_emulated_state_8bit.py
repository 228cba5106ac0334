"""8-bit optimizer states on CUDA: not implemented by the CUDA kernels yet
(fusedopt's optimizers update them with the plain-torch reference there). The
CUDA list op, run under the CPU emulation of CUDA, refuses them with a clear
message before it writes anything, where the CPU op takes the same call."""

from __future__ import annotations

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from emu_twins import Twins, adam_call, values

# the CUDA kernels under the emulation run once, in the main pass (not in the
# torch matrix's venvs, which select `not cuda_emulated`)
pytestmark = pytest.mark.cuda_emulated

SIZES = [1000, 256, 3]


def refusal_case():
    from fusedopt._quant8 import quantize_blockwise

    t = Twins()
    t.add("params", values(SIZES, 0, torch.float32))
    t.add("grads", values(SIZES, 100, torch.float32))
    m = [quantize_blockwise(x, True) for x in values(SIZES, 200, torch.float32, scale=1e-3)]
    v = [quantize_blockwise(x, False) for x in values(SIZES, 300, torch.float32, positive=True, scale=1e-3)]
    # adam_call lists exp_avgs, then exp_avg_sqs: here all codes, then all scales
    t.add("exp_avgs", [c for c, _ in m] + [c for c, _ in v])
    t.add("exp_avg_sqs", [a for _, a in m] + [a for _, a in v])
    t.add("steps", [torch.full((), 3.0) for _ in SIZES])
    before = {k: [x.clone() for x in t.emu[k]] for k in ("params", "exp_avgs", "exp_avg_sqs", "steps")}
    with pytest.raises(RuntimeError, match="8-bit states are not implemented by the CUDA kernels"):
        adam_call(ed.ops(), t.emu)
    for k, old in before.items():
        assert all(torch.equal(x, y) for x, y in zip(t.emu[k], old)), k
    adam_call(torch.ops.fusedopt, t.cpu)  # the CPU op takes it
    assert all(float(s) == 4.0 for s in t.cpu["steps"])


@requires_native_cpu
def test_cuda_op_refuses_8bit_states(cuda_emu):
    cuda_emu.run(refusal_case)
