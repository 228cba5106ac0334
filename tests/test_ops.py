"""The ops as torch.library sees them: schemas, fake kernels, mutation
annotations (torch.library.opcheck), and what backend_info reports."""

import subprocess
import sys

import pytest
import torch

import fusedopt
import fusedopt._ops as ops
from conftest import NATIVE_CPU, NATIVE_DISABLED, requires_native_cpu
from rule_calls import adam_sample_to_args, sgd_sample_to_args


def test_native_library_is_loaded_unless_disabled():
    # a build that silently lost its native library must fail here, not fall back
    assert NATIVE_CPU != NATIVE_DISABLED, ops.CPU_LIB.reason


def test_backend_info_names_the_cpu_backend():
    info = fusedopt.backend_info()
    cpu = info["devices"]["cpu"]
    assert cpu["backend"] == ("cpu-native" if NATIVE_CPU else "reference")
    assert cpu["reason"]
    if NATIVE_CPU:
        assert cpu["isa"] in ("generic", "avx2", "avx512")
        assert info["build"]["torch_abi_floor"] == "2.10"


def test_info_command_runs():
    out = subprocess.run([sys.executable, "-m", "fusedopt", "info"], capture_output=True, text=True, check=True).stdout
    assert "cpu" in out and ("cpu-native" in out or "reference" in out)


def test_check_command_passes():
    res = subprocess.run([sys.executable, "-m", "fusedopt", "check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("OK")


def _adam_sample(dtype=torch.float32, amsgrad=False):
    ps = [torch.randn(n, dtype=dtype) for n in (3, 40)]
    return (
        ps,
        [torch.randn_like(p) for p in ps],
        [torch.zeros_like(p) for p in ps],
        [torch.zeros_like(p) for p in ps],
        [torch.zeros_like(p) for p in ps] if amsgrad else [],
        [torch.zeros(()) for _ in ps],
        [],
        0.01,
        None,
        0.9,
        0.999,
        1e-8,
        0.1,
        True,
        amsgrad,
        False,
        torch.tensor(2.0),
        torch.zeros(1),
        torch.tensor([4.0]),
        1.0,
    )


def _sgd_sample():
    ps = [torch.randn(n) for n in (3, 40)]
    return (
        ps, [torch.randn_like(p) for p in ps], [torch.zeros_like(p) for p in ps],
        [torch.tensor(True) for _ in ps], [], 0.01, torch.tensor(0.02), 0.9, 0.0, 0.0, False, False,
        None, None, None, 0.0,
    )


@requires_native_cpu
@pytest.mark.parametrize(
    "op,args",
    [
        ("adam_", adam_sample_to_args(_adam_sample())),
        ("adam_", adam_sample_to_args(_adam_sample(torch.bfloat16, amsgrad=True))),
        ("sgd_", sgd_sample_to_args(_sgd_sample())),
        ("grad_stats_", ([torch.randn(5), torch.randn(7, dtype=torch.bfloat16)], torch.tensor(8.0), torch.zeros(1), torch.zeros(1))),
        ("unscale_", ([torch.randn(5), torch.randn(7, dtype=torch.float16)], torch.zeros(1), torch.tensor(0.5))),
        ("adam_", adam_sample_to_args(_adam_sample() + (0.25,))),
        ("sgd_", sgd_sample_to_args(_sgd_sample() + (0.25,))),
        ("grad_stats_", ([torch.randn(5), torch.randn(7, dtype=torch.float16)], None, torch.zeros(1), torch.zeros(1), 0.5)),
        ("clip_value_", ([torch.randn(5), torch.randn(7, dtype=torch.bfloat16)], 0.5)),
    ],
)
def test_opcheck(op, args):
    torch.library.opcheck(
        getattr(torch.ops.fusedopt, op).default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


@requires_native_cpu
def test_grad_stats_matches_torch():
    grads = [torch.randn(n).to(dt) for n, dt in ((5, torch.float32), (300, torch.bfloat16), (70001, torch.float16))]
    scale = torch.tensor(64.0)
    found, sumsq = torch.zeros(1), torch.full((1,), 2.0)
    torch.ops.fusedopt.grad_stats_(grads, scale, found, sumsq)
    expected = 2.0 + sum(((g.double() * (1 / 64.0)) ** 2).sum() for g in grads)
    assert found.item() == 0.0
    torch.testing.assert_close(sumsq.double(), expected.reshape(1), rtol=1e-6, atol=0)
    grads[1][17] = float("nan")
    torch.ops.fusedopt.grad_stats_(grads, scale, found, sumsq)
    assert found.item() == 1.0


@requires_native_cpu
def test_grad_stats_is_deterministic_across_thread_counts():
    grads = [torch.randn(n) for n in (1000, 200003, 77)]
    out = []
    for threads in (1, 2):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            found, sumsq = torch.zeros(1), torch.zeros(1)
            torch.ops.fusedopt.grad_stats_(grads, None, found, sumsq)
            out.append(sumsq)
        finally:
            torch.set_num_threads(prev)
    assert torch.equal(out[0], out[1])


@requires_native_cpu
def test_unscale_matches_torch():
    grads = [torch.randn(n).to(dt) * 100 for n, dt in ((5, torch.float32), (300, torch.float32), (33, torch.float16))]
    ref = [g.clone() for g in grads]
    inv = torch.tensor(1 / 128.0)
    found, ref_found = torch.zeros(1), torch.zeros(1)
    torch.ops.fusedopt.unscale_(grads, found, inv)
    torch._amp_foreach_non_finite_check_and_unscale_(ref[:2], ref_found, inv)
    ref[2].mul_(inv)
    for a, b in zip(grads, ref):
        assert torch.equal(a, b)
    assert found.item() == ref_found.item() == 0.0
    grads[0][2] = float("inf")
    torch.ops.fusedopt.unscale_(grads, found, inv)
    assert found.item() == 1.0


@requires_native_cpu
def test_grad_stats_clamps_after_unscaling_and_finds_infs_before():
    grads = [torch.randn(n).to(dt) * 3 for n, dt in ((5, torch.float32), (300, torch.bfloat16), (70001, torch.float16))]
    scale = torch.tensor(2.0)
    found, sumsq = torch.zeros(1), torch.zeros(1)
    torch.ops.fusedopt.grad_stats_(grads, scale, found, sumsq, 0.5)
    expected = sum(((g.double() / 2.0).clamp(-0.5, 0.5) ** 2).sum() for g in grads)
    assert found.item() == 0.0
    torch.testing.assert_close(sumsq.double(), expected.reshape(1), rtol=1e-6, atol=0)
    grads[2][12345] = float("-inf")  # clamped to -0.5 in the sum, but still an overflow
    found, sumsq = torch.zeros(1), torch.zeros(1)
    torch.ops.fusedopt.grad_stats_(grads, scale, found, sumsq, 0.5)
    assert found.item() == 1.0 and torch.isfinite(sumsq).all()


def _cloned(args):
    return [[t.clone() for t in a] if isinstance(a, list) else a.clone() if isinstance(a, torch.Tensor) else a for a in args]


@requires_native_cpu
@pytest.mark.parametrize("op", ["adam_", "sgd_"])
def test_update_with_max_value_matches_the_reference(op):
    from fusedopt import _reference_sgd, reference

    base = list(_adam_sample() if op == "adam_" else _sgd_sample())
    for g in base[1]:
        g.copy_(torch.linspace(-3, 3, g.numel()))
    if op == "adam_":  # moments of earlier steps: a first Adam step is sign(g) whatever the clamp
        for m, v in zip(base[2], base[3]):
            m.fill_(0.1)
            v.fill_(0.5)
    native, ref, unclamped = _cloned(base), _cloned(base), _cloned(base)
    to_args = adam_sample_to_args if op == "adam_" else sgd_sample_to_args
    getattr(torch.ops.fusedopt, op)(*to_args(native + [0.25]))
    (reference.adam_ if op == "adam_" else _reference_sgd.sgd_)(*ref, 0.25)
    getattr(torch.ops.fusedopt, op)(*to_args(unclamped + [0.0]))
    for a, b, c in zip(native[0], ref[0], unclamped[0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, c)  # the clamp changed the update


@requires_native_cpu
def test_clip_value_matches_torch_and_keeps_nan():
    grads = [torch.randn(n).to(dt) * 3 for n, dt in ((5, torch.float32), (300, torch.bfloat16), (70001, torch.float16))]
    grads[0][1], grads[2][7] = float("nan"), float("inf")
    ref = [g.clamp_min(-0.5).clamp_max(0.5) for g in grads]
    torch.ops.fusedopt.clip_value_(grads, 0.5)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
