"""The CUDA multi-tensor harness against the CPU kernels, bit for bit: lists
misaligned for the vector loads (grads or states beside aligned params, and
the reverse), launch-table rollover (more than 256 tensors, more than 2048
chunks, a tensor continued into the next table) and the per-tensor scalar
kernel's batches (more than 3072 tensors). See cuda_common.py for why bits are
expected to agree."""

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import (
    DEV,
    DTYPES,
    SUMSQ_RTOL,
    adam_op,
    assert_same_bits,
    cpu_values,
    on_gpu,
    set_twin_grads,
    sgd_op,
    twin_params,
)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend"), requires_cuda_kernels]

# tail only; one chunk; two chunks, the second partial
SIZES = (3, 1001, 65536 + 37)


def _controls(device, sumsq):
    """GradScaler's scale, a clear found_inf and a given sum of squares (norm 2
    against max_norm 1: the clip is active). The same sumsq on both sides makes
    the clipped update comparable bit for bit."""
    return dict(grad_scale=torch.tensor([1024.0], device=device), found_inf=torch.zeros(1, device=device),
                sumsq=torch.tensor([sumsq], device=device), max_norm=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("misaligned", ["grads", "states", "params"])
@pytest.mark.parametrize("maximize", [False, True])
def test_adam_with_misaligned_lists_matches_the_cpu_bitwise(dtype, offset, misaligned, maximize):
    lists = {
        "params": [cpu_values(n, k, dtype) for k, n in enumerate(SIZES)],
        "grads": [cpu_values(n, 100 + k, dtype) for k, n in enumerate(SIZES)],
        "exp_avgs": [cpu_values(n, 200 + k, dtype, scale=1e-3) for k, n in enumerate(SIZES)],
        "exp_avg_sqs": [cpu_values(n, 300 + k, dtype, positive=True, scale=1e-3) for k, n in enumerate(SIZES)],
        "max_exp_avg_sqs": [cpu_values(n, 400 + k, dtype, positive=True, scale=1e-3) for k, n in enumerate(SIZES)],
    }
    group = {"params": "params", "grads": "grads"}
    gpu = {k: [on_gpu(x, offset if group.get(k, "states") == misaligned else 0) for x in v] for k, v in lists.items()}
    cpu = {k: [x.clone() for x in v] for k, v in lists.items()}
    steps = {"gpu": [torch.full((), 3.0, device=DEV) for _ in SIZES], "cpu": [torch.full((), 3.0) for _ in SIZES]}
    for _ in range(2):
        for side, ts, device in (("gpu", gpu, DEV), ("cpu", cpu, "cpu")):
            adam_op(ts["params"], ts["grads"], ts["exp_avgs"], ts["exp_avg_sqs"], ts["max_exp_avg_sqs"],
                    steps[side], amsgrad=True, maximize=maximize, **_controls(device, 4.0))
    for key in ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"):
        assert_same_bits(gpu[key], cpu[key], key)
    assert_same_bits(steps["gpu"], steps["cpu"], "steps")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("misaligned", ["grads", "states", "params"])
def test_sgd_with_misaligned_lists_matches_the_cpu_bitwise(dtype, offset, misaligned):
    lists = {
        "params": [cpu_values(n, k, dtype) for k, n in enumerate(SIZES)],
        "grads": [cpu_values(n, 100 + k, dtype) for k, n in enumerate(SIZES)],
        "bufs": [torch.zeros(n, dtype=dtype) for n in SIZES],
    }
    group = {"params": "params", "grads": "grads", "bufs": "states"}
    gpu = {k: [on_gpu(x, offset if group[k] == misaligned else 0) for x in v] for k, v in lists.items()}
    cpu = {k: [x.clone() for x in v] for k, v in lists.items()}
    first = {"gpu": [torch.ones((), dtype=torch.bool, device=DEV) for _ in SIZES],
             "cpu": [torch.ones((), dtype=torch.bool) for _ in SIZES]}
    for _ in range(2):  # the first step copies the grad into the buffer, the second applies momentum
        for side, ts, device in (("gpu", gpu, DEV), ("cpu", cpu, "cpu")):
            sgd_op(ts["params"], ts["grads"], ts["bufs"], first[side], nesterov=True, maximize=True,
                   **_controls(device, 9.0))
    assert_same_bits(gpu["params"], cpu["params"], "params")
    assert_same_bits(gpu["bufs"], cpu["bufs"], "momentum_buffers")
    assert not any(bool(f) for f in first["gpu"])


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_unscale_of_misaligned_grads_matches_the_cpu_bitwise(offset):
    grads = [cpu_values(n, 7 + k, dt, scale=1000.0) for k, (n, dt) in enumerate(zip(SIZES * 3, DTYPES * 3))]
    gpu = [on_gpu(g, offset) for g in grads]
    cpu = [g.clone() for g in grads]
    found = {"gpu": torch.zeros(1, device=DEV), "cpu": torch.zeros(1)}
    torch.ops.fusedopt.unscale_(gpu, found["gpu"], torch.tensor([1 / 1024.0], device=DEV))
    torch.ops.fusedopt.unscale_(cpu, found["cpu"], torch.tensor([1 / 1024.0]))
    assert_same_bits(gpu, cpu, "grads")
    assert found["gpu"].item() == found["cpu"].item() == 0.0


def test_table_rollover_more_than_256_tensors_and_2048_chunks():
    # 300 one-chunk tensors fill a table by tensor count (256) and start a second
    # one; the big tensor (2100 chunks) then fills it by chunk count, continues in
    # slot 0 of a third table, and ten more tensors follow it there.
    big = 2100 * 65536 + 5
    sizes = [1000 + k for k in range(300)] + [big] + [17] * 10
    p_gpu, p_cpu = twin_params([(n,) for n in sizes], torch.float32)
    og = fusedopt.AdamW(p_gpu, lr=0.01, weight_decay=0.1)
    oc = fusedopt.AdamW(p_cpu, lr=0.01, weight_decay=0.1)
    set_twin_grads(p_gpu, p_cpu, 0)
    og.step()
    oc.step()
    assert_same_bits(p_gpu, p_cpu, "params")
    assert_same_bits([og.state[p]["exp_avg_sq"] for p in p_gpu], [oc.state[p]["exp_avg_sq"] for p in p_cpu],
                     "exp_avg_sq")

    # grad_stats over the same tables: the sum (within the fp32-partial bound,
    # cuda_common.py) and an inf in the big tensor's continuation (chunk 2080)
    grads = [p.grad for p in p_gpu]
    found, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
    torch.ops.fusedopt.grad_stats_(grads, None, found, sumsq)
    cf, cs = torch.zeros(1), torch.zeros(1)
    torch.ops.fusedopt.grad_stats_([p.grad for p in p_cpu], None, cf, cs)
    assert found.item() == 0.0
    torch.testing.assert_close(sumsq.cpu(), cs, rtol=SUMSQ_RTOL, atol=0)
    grads[300][2080 * 65536 + 11] = float("inf")
    torch.ops.fusedopt.grad_stats_(grads, None, found, sumsq)
    assert found.item() == 1.0


@pytest.mark.parametrize("cls,kwargs", [
    (fusedopt.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (fusedopt.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2)),
])
def test_more_than_3072_tensors_advance_every_step_counter_and_flag(cls, kwargs):
    # the per-tensor scalar kernel takes 3072 tensors per launch: 3100 need two,
    # and the update itself 13 tables (256 tensors each)
    shapes = [(5,)] * 3100 + [(0,), (2, 0)]
    p_gpu, p_cpu = twin_params(shapes, torch.float32)
    og, oc = cls(p_gpu, **kwargs), cls(p_cpu, **kwargs)
    for step in range(2):
        set_twin_grads(p_gpu, p_cpu, step)
        og.step()
        oc.step()
    assert_same_bits(p_gpu, p_cpu, "params")
    if cls is fusedopt.AdamW:
        assert all(float(og.state[p]["step"]) == 2.0 for p in p_gpu)
    else:
        # every buffer was started by step 1 and applied by step 2
        assert not any(bool(og._momentum_first[p]) for p in p_gpu)
        assert_same_bits([og.state[p]["momentum_buffer"] for p in p_gpu],
                         [oc.state[p]["momentum_buffer"] for p in p_cpu], "momentum_buffer")


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_grad_stats_of_misaligned_grads(offset):
    # misaligned grads take the element-by-element path, which groups a thread's
    # fp32 partial sums differently: within the bound of cuda_common.py of the
    # aligned result and of the fp64 sum, not necessarily the same bits
    grads = [cpu_values(n, 50 + k, dt, scale=3.0) for k, (n, dt) in enumerate(zip(SIZES * 3, DTYPES * 3))]
    exact = sum((g.double() / 64.0).square().sum() for g in grads)
    results = []
    for off in (0, offset):
        found, sumsq = torch.zeros(1, device=DEV), torch.zeros(1, device=DEV)
        torch.ops.fusedopt.grad_stats_([on_gpu(g, off) for g in grads], torch.tensor([64.0], device=DEV), found,
                                       sumsq)
        assert found.item() == 0.0
        results.append(sumsq.cpu())
    for r in results:
        torch.testing.assert_close(r.double().reshape(()), exact, rtol=SUMSQ_RTOL, atol=0)
    torch.testing.assert_close(results[1], results[0], rtol=2 * SUMSQ_RTOL, atol=0)
