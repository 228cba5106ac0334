"""csrc/cuda's AMP kernels (amp.cu: grad_stats_, unscale_, clip_value_) and
their host code under the CUDA emulation (tests/cuda_emu), against the CPU
kernels: found_inf and every unscaled or clamped grad bit for bit; the sum of
squares, which CUDA accumulates in fp32 partials by design (tests/cuda_common.py),
within that design's bound of the CPU's and of the exact sum, and the same bits
whatever order the blocks run in. Cases run in the emulation worker."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from cuda_common import SUMSQ_RTOL, cpu_values
from emu_twins import DTYPES, Twins, assert_same_bits, cpu_ops

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

# per dtype: a tail shorter than a pack, a chunk and one element, several chunks
SIZES = (3, 65537, 200_000)


def _grads(scale=3.0, offset=0):
    """Grads of all three dtypes in one list (three launch groups: the first and
    the last bracket the call); bf16 ones misaligned by `offset`."""
    t = Twins()
    grads, offsets = [], []
    for k, dt in enumerate(DTYPES.values()):
        for j, n in enumerate(SIZES):
            grads.append(cpu_values(n, 10 * k + j, dt, scale=scale))
            offsets.append(offset if dt is torch.bfloat16 else 0)
    pairs = [ed.twins(g, o) for g, o in zip(grads, offsets)]
    t.emu["grads"], t.cpu["grads"] = [e for e, _ in pairs], [c for _, c in pairs]
    return t


def _stats(ops, grads, scale, max_value, sumsq0=0.0):
    found, sumsq = torch.zeros(1), torch.full((1,), sumsq0)
    s = None if scale is None else torch.tensor([scale])
    ops.grad_stats_(grads, s, found, sumsq, max_value)
    return found, sumsq


def _exact(grads, scale, max_value):
    inv = 1.0 / (scale or 1.0)
    total = torch.zeros((), dtype=torch.float64)
    for g in grads:
        u = (g.float() * torch.tensor(inv, dtype=torch.float32)).double()  # rounded once, as unscale_ does
        if max_value:
            u = u.clamp(-max_value, max_value)
        total += u.square().sum()
    return total


def stats_case(scale, max_value, offset):
    t = _grads(offset=offset)
    runs = [_stats(ed.ops(), t.emu["grads"], scale, max_value, sumsq0=0.25) for _ in range(2)]
    f_cpu, s_cpu = _stats(cpu_ops(), t.cpu["grads"], scale, max_value, sumsq0=0.25)
    # two runs, each launch's blocks in another shuffled order: the same bits
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][0], runs[1][0])
    found, sumsq = runs[0]
    assert found.item() == f_cpu.item() == 0.0
    exact = _exact(t.cpu["grads"], scale, max_value) + 0.25
    torch.testing.assert_close(sumsq.double().reshape(()), exact, rtol=SUMSQ_RTOL, atol=0)
    torch.testing.assert_close(sumsq, s_cpu, rtol=SUMSQ_RTOL, atol=0)
    assert_same_bits(t.emu["grads"], t.cpu["grads"], "grads (read only)")


@pytest.mark.parametrize("scale,max_value,offset", [(None, 0.0, 0), (64.0, 0.0, 1), (64.0, 0.02, 3), (None, 1.5, 2)])
def test_grad_stats_matches_the_cpu_kernels(cuda_emu, scale, max_value, offset):
    cuda_emu.run(stats_case, scale=scale, max_value=max_value, offset=offset)


def found_inf_case(bad, where, max_value):
    t = _grads(offset=1)
    for side in (t.emu, t.cpu):
        side["grads"][where][65536 + 11] = bad  # in the tensor's second chunk
    f_emu, _ = _stats(ed.ops(), t.emu["grads"], 128.0, max_value)
    f_cpu, _ = _stats(cpu_ops(), t.cpu["grads"], 128.0, max_value)
    assert f_emu.item() == f_cpu.item() == 1.0


@pytest.mark.parametrize("bad,where,max_value", [
    (float("inf"), 2, 0.0),    # fp32, the first launch group
    (float("nan"), 5, 0.0),    # bf16, misaligned, the middle group
    (float("-inf"), 8, 0.5),   # fp16, the last group; the clamp hides it from the sum, not from found_inf
])
def test_grad_stats_finds_infs_and_nans(cuda_emu, bad, where, max_value):
    cuda_emu.run(found_inf_case, bad=bad, where=where, max_value=max_value)


def many_blocks_case():
    # 300 tensors of 3000 elements: two launches of one group, 256 and 44 blocks,
    # each block's partial ~1/300 of the sum, so a partial lost or counted twice
    # by the last-block reduction would be 1000 times the bound
    grads = [cpu_values(3000, k) for k in range(300)]
    emu = [ed.device_tensor(g) for g in grads]
    ed.clear_launch_log()
    found, sumsq = _stats(ed.ops(), emu, None, 0.0)
    assert [grid[0] for grid in ed.kernel_launches("grad_stats_kernel")] == [256, 44]
    assert found.item() == 0.0
    torch.testing.assert_close(sumsq.double().reshape(()), _exact(grads, None, 0.0), rtol=SUMSQ_RTOL, atol=0)


def test_grad_stats_adds_every_block_of_every_launch(cuda_emu):
    cuda_emu.run(many_blocks_case)


def overflow_case():
    # (1e20)^2 overflows fp32: the kernel redoes such a thread in fp64, so sumsq
    # becomes inf, as on the CPU, and found_inf stays clear
    g = torch.full((70_000,), 1e20)
    g[::7] = 0.5
    f_emu, s_emu = _stats(ed.ops(), [ed.device_tensor(g, 1)], None, 0.0)
    f_cpu, s_cpu = _stats(cpu_ops(), [g], None, 0.0)
    assert f_emu.item() == f_cpu.item() == 0.0
    assert s_emu.item() == s_cpu.item() == float("inf")


def test_finite_grads_whose_squares_overflow_fp32_are_not_infs(cuda_emu):
    cuda_emu.run(overflow_case)


def nothing_case():
    found, sumsq = _stats(ed.ops(), [torch.empty(0), torch.empty(3, 0)], None, 0.0, sumsq0=2.5)
    assert found.item() == 0.0 and sumsq.item() == 2.5


def test_grad_stats_of_nothing_changes_nothing(cuda_emu):
    cuda_emu.run(nothing_case)


def unscale_case(offset, inv, bad):
    t = Twins()
    grads = [cpu_values(n, 7 + k, dt, scale=1000.0) for k, dt in enumerate(DTYPES.values()) for n in SIZES]
    if bad is not None:
        grads[4][70] = bad
    t.add("grads", grads, offset)
    found = {"emu": torch.zeros(1), "cpu": torch.zeros(1)}
    ed.ops().unscale_(t.emu["grads"], found["emu"], torch.tensor([inv]))
    cpu_ops().unscale_(t.cpu["grads"], found["cpu"], torch.tensor([inv]))
    t.assert_same("grads")
    assert found["emu"].item() == found["cpu"].item() == (0.0 if bad is None else 1.0)


@pytest.mark.parametrize("offset,inv,bad", [(0, 1 / 1024.0, None), (1, 1 / 1024.0, None), (2, 1 / 3.0, float("inf")),
                                            (3, 1.0, float("nan"))])
def test_unscale_matches_the_cpu_kernels(cuda_emu, offset, inv, bad):
    cuda_emu.run(unscale_case, offset=offset, inv=inv, bad=bad)


def clamp_case(clip_value, offset):
    t = Twins()
    grads = [cpu_values(n, 3 + k, dt) for k, dt in enumerate(DTYPES.values()) for n in SIZES]
    grads[1][5] = float("nan")  # kept
    t.add("grads", grads, offset)
    ed.ops().clip_value_(t.emu["grads"], clip_value)
    cpu_ops().clip_value_(t.cpu["grads"], clip_value)
    t.assert_same("grads")


@pytest.mark.parametrize("clip_value,offset", [(0.5, 0), (0.5, 3), (-1.0, 1)])
def test_clip_value_matches_the_cpu_kernels(cuda_emu, clip_value, offset):
    cuda_emu.run(clamp_case, clip_value=clip_value, offset=offset)
