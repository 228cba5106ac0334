"""Layouts that reach every path of csrc/cuda's multi-tensor harness, under the
CUDA emulation (tests/cuda_emu), against the CPU kernels bit for bit: tails of
1-7 elements beside misaligned lists, zero-element tensors, a launch table that
rolls over by tensor count (256) and by chunk count (2048) with a tensor
continued into the next table, more than 3072 tensors (the step counters'
second batch), and offsets past 2^31 elements.

The large layouts live in sparse memory (emu_device.sparse_tensor: gigabytes of
untouched zero pages), and only the blocks over the windows compared run
(emu_device.selected_blocks); each block's work depends on its chunk alone, so
a window of blocks is checked against the CPU kernels run on that window.
Cases run in the emulation worker."""

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from cuda_common import cpu_values
from emu_twins import Twins, adam_call, assert_same_bits, cpu_ops, sgd_call, step_both, values

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

CHUNK = 65536  # csrc/cuda/chunk_table.h: kChunk


def tails_case(dtype_name, offset):
    # every tail length below a pack and above it, each list misaligned its own way
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype_name]
    sizes = (1, 2, 3, 4, 5, 6, 7, 9)
    t = Twins()
    t.add("params", values(sizes, 0, dtype), 0)
    t.add("grads", values(sizes, 10, torch.float32), offset)
    t.add("exp_avgs", values(sizes, 20, dtype, scale=1e-3), (offset + 1) % 4)
    t.add("exp_avg_sqs", values(sizes, 30, dtype, positive=True, scale=1e-3), (offset + 2) % 4)
    t.add("steps", [torch.zeros(()) for _ in sizes])
    step_both(t, adam_call, max_norm=0.0)
    t.assert_same("params", "exp_avgs", "exp_avg_sqs", "steps")


@pytest.mark.parametrize("dtype_name,offset", [("f32", 1), ("bf16", 3), ("f16", 2)])
def test_tails_shorter_than_a_pack(cuda_emu, dtype_name, offset):
    cuda_emu.run(tails_case, dtype_name=dtype_name, offset=offset)


def zero_elements_case():
    sizes = (5, 0, 70_000, 0)
    t = Twins()
    t.add("params", [x.reshape(2, 0) if x.numel() == 0 and k == 3 else x for k, x in
                     enumerate(values(sizes, 0, torch.float32))])
    t.add("grads", [x.reshape(2, 0) if x.numel() == 0 and k == 3 else x for k, x in
                    enumerate(values(sizes, 10, torch.float32))])
    t.add("bufs", [torch.zeros_like(x) for x in t.cpu["params"]])
    t.add("first", [torch.ones((), dtype=torch.bool) for _ in sizes])
    for _ in range(2):
        step_both(t, sgd_call, max_norm=0.0)
    t.assert_same("params", "bufs", "first")
    # a zero-element tensor has no block, but its flag is a tensor's like the others
    assert not any(bool(f) for f in t.emu["first"])


def test_zero_element_tensors(cuda_emu):
    cuda_emu.run(zero_elements_case)


def many_tensors_case(optimizer):
    # the step counters and momentum flags advance in batches of 3072 tensors:
    # 3100 need two launches (which run whole). The update itself takes 13
    # tables of 256 tensors; of those launches the first runs its first and
    # last four blocks, the twelfth none, the last all (the tensors of the
    # skipped blocks must come out untouched).
    n = 3100
    ran = list(range(4)) + list(range(252, 256)) + list(range(3072, n))
    t = Twins()
    t.add("params", [cpu_values(3, k) for k in range(n)])
    t.add("grads", [cpu_values(3, n + k) for k in range(n)])
    before = [x.clone() for x in t.emu["params"]]
    if optimizer == "adam":
        t.add("exp_avgs", [torch.zeros(3) for _ in range(n)])
        t.add("exp_avg_sqs", [torch.zeros(3) for _ in range(n)])
        t.add("steps", [torch.zeros(()) for _ in range(n)])
        call, kernel, states = adam_call, "rule_kernel<fusedopt::AdamRule", ("exp_avgs", "exp_avg_sqs")
    else:
        t.add("bufs", [torch.zeros(3) for _ in range(n)])
        t.add("first", [torch.ones((), dtype=torch.bool) for _ in range(n)])
        call, kernel, states = sgd_call, "rule_kernel<fusedopt::SgdRule", ("bufs",)
    ed.clear_launch_log()
    with ed.selected_blocks((0, 0, 4), (0, 252, 256), *[(launch, 0, 0) for launch in range(1, 12)]):
        call(ed.ops(), t.emu, max_norm=0.0)
    call(cpu_ops(), t.cpu, max_norm=0.0)
    assert [g[0] for g in ed.kernel_launches(kernel)] == [256] * 12 + [28]
    assert [g[0] for g in ed.kernel_launches("advance_scalars_kernel")] == [12, 1]  # 3072 and 28 tensors
    for name in ("params",) + states:
        assert_same_bits([t.emu[name][k] for k in ran], [t.cpu[name][k] for k in ran], name)
    assert all(torch.equal(t.emu["params"][k], before[k]) for k in range(4, 252))
    if optimizer == "adam":
        t.assert_same("steps")
        assert all(float(s) == 1.0 for s in t.emu["steps"])
    else:
        t.assert_same("first")
        assert not any(bool(f) for f in t.emu["first"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_more_than_3072_tensors(cuda_emu, optimizer):
    cuda_emu.run(many_tensors_case, optimizer=optimizer)


def _fill_window(t: torch.Tensor, lo: int, seed: int, positive=False, scale=1.0) -> None:
    t[lo:] = cpu_values(t.numel() - lo, seed, t.dtype, positive=positive, scale=scale)


def rollover_case():
    # 300 one-chunk tensors fill a table by count (256: launch 0) and start the
    # next; the big tensor fills that one by chunks (2048 blocks: launch 1, its
    # chunks 0-2003) and continues in slot 0 of a third table with ten small
    # tensors after it (launch 2). Launch 1 runs its first 48 and last 8 blocks.
    big_chunks = 2009
    big = (big_chunks - 1) * CHUNK + 777
    small = [1000 + k for k in range(300)]
    tail = [17] * 10
    names = ("params", "grads", "exp_avgs", "exp_avg_sqs")
    emu = {k: [] for k in names}
    for k, (seed, positive, scale) in enumerate(((0, False, 1.0), (1, False, 1.0), (2, False, 1e-3),
                                                 (3, True, 1e-3))):
        name = names[k]
        emu[name] = [ed.device_tensor(x) for x in values(small, 100 * k + seed, torch.float32, positive, scale)]
        b = ed.sparse_tensor(big, torch.float32)
        b[: 4 * CHUNK] = cpu_values(4 * CHUNK, 7 + k, torch.float32, positive=positive, scale=scale)
        _fill_window(b, 1996 * CHUNK, 17 + k, positive, scale)
        emu[name].append(b)
        emu[name] += [ed.device_tensor(x) for x in values(tail, 100 * k + 50, torch.float32, positive, scale)]
    # the CPU kernels over the same values, the big tensor as its two windows
    windows = [(0, 4 * CHUNK), (1996 * CHUNK, big)]
    cpu = {k: [x.clone() for x in v[:300]] + [v[300][lo:hi].clone() for lo, hi in windows] +
           [x.clone() for x in v[301:]] for k, v in emu.items()}
    emu["steps"] = [torch.zeros(()) for _ in range(311)]
    cpu["steps"] = [torch.zeros(()) for _ in range(312)]
    ed.clear_launch_log()
    with ed.selected_blocks((1, 0, 48), (1, 2040, 2048)):
        adam_call(ed.ops(), emu)
    adam_call(cpu_ops(), cpu)
    assert ed.kernel_launches("rule_kernel<fusedopt::AdamRule") == [(256, 1, 1), (2048, 1, 1), (15, 1, 1)]
    emu_view = {k: v[:300] + [v[300][lo:hi] for lo, hi in windows] + v[301:] for k, v in emu.items() if k != "steps"}
    for k in names:
        assert_same_bits(emu_view[k], cpu[k], k)
    assert float(emu["params"][300][1000 * CHUNK]) == 0.0  # a skipped block's chunk: untouched zero pages
    assert all(float(s) == 1.0 for s in emu["steps"])


def test_table_rollover_by_tensors_and_by_chunks(cuda_emu):
    cuda_emu.run(rollover_case)


def past_2_31_case():
    # one fp16 tensor of 2^31 + 3 chunks + 37 elements: launches 0-15 hold its
    # first 2^31 elements (2048 chunks each), launch 16 the rest. Blocks over the
    # last two chunks below 2^31 and every chunk above it run.
    n = (1 << 31) + 3 * CHUNK + 37
    lo = (1 << 31) - 2 * CHUNK
    lists = {k: ed.sparse_tensor(n, torch.float16) for k in ("params", "grads", "exp_avgs", "exp_avg_sqs")}
    for k, (name, positive, scale) in enumerate((("params", False, 1.0), ("grads", False, 1.0),
                                                 ("exp_avgs", False, 1e-3), ("exp_avg_sqs", True, 1e-3))):
        _fill_window(lists[name], lo, 30 + k, positive, scale)
    t = Twins()
    for name, x in lists.items():
        t.emu[name] = [x]
        t.cpu[name] = [x[lo:].clone()]
    t.emu["steps"], t.cpu["steps"] = [torch.full((), 9.0)], [torch.full((), 9.0)]
    skip_below = [(launch, 0, 0) for launch in range(15)]
    ed.clear_launch_log()
    with ed.selected_blocks(*skip_below, (15, 2046, 2048)):
        adam_call(ed.ops(), t.emu, max_norm=0.0)
    adam_call(cpu_ops(), t.cpu, max_norm=0.0)
    assert ed.kernel_launches("rule_kernel<fusedopt::AdamRule") == [(2048, 1, 1)] * 16 + [(4, 1, 1)]
    for name in lists:
        assert_same_bits([t.emu[name][0][lo:]], t.cpu[name], name)
    assert float(lists["params"][1000]) == 0.0  # skipped: untouched

    # unscale_ writes the grads past 2^31 as well; grad_stats_ finds an inf
    # there (its sum is not checked: the skipped launches leave its running
    # total unset, so only found_inf, which a block sets itself, is compared)
    grads = lists["grads"]
    cpu_grads = [grads[lo:].clone()]
    found, cpu_found = torch.zeros(1), torch.zeros(1)
    with ed.selected_blocks(*skip_below, (15, 2046, 2048)):
        ed.ops().unscale_([grads], found, torch.tensor([0.125]))
    cpu_ops().unscale_(cpu_grads, cpu_found, torch.tensor([0.125]))
    assert_same_bits([grads[lo:]], cpu_grads, "unscaled grads")
    for bad, expected in ((False, 0.0), (True, 1.0)):
        if bad:
            grads[(1 << 31) + 2 * CHUNK + 5] = float("inf")
        found = torch.zeros(1)
        with ed.selected_blocks(*[(launch, 0, 0) for launch in range(16)]):
            ed.ops().grad_stats_([grads], None, found, torch.zeros(1))
        assert found.item() == expected


def test_offsets_past_2_31_elements(cuda_emu):
    cuda_emu.run(past_2_31_case)
