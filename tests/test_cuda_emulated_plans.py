"""The CUDA native plans (csrc/cuda/plan_ops.cpp, calls.h) and the whole Python
step above them, under the CUDA emulation (tests/cuda_emu): fusedopt's
optimizers and GradScaler on CPU tensors, with the op table the CPU backend
uses pointed at the emulated CUDA library (torch.ops.fusedopt_emu), so every
step runs csrc/cuda's host code and kernels. As tests/test_cuda_plans.py
does on a GPU: steps through plans equal list-op steps bit for bit; and they
equal the CPU kernels' steps, bit for bit where no global norm is involved
(CUDA sums squares in fp32 partials by design: tests/cuda_common.py). Cases run
in the emulation worker."""

import contextlib
from types import SimpleNamespace

import pytest
import torch

import emu_device as ed
from conftest import requires_native_cpu
from cuda_common import ULP
from plan_cases import CONFIGS, assert_same_run, planned_buckets, run_plan_case

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]

CUDA_FIRST_ID = 1 << 40  # csrc/cuda/plan_ops.cpp: CudaTables::kFirstId


@contextlib.contextmanager
def emulated_cuda_kernels():
    """fusedopt's CPU backend served by the emulated CUDA library."""
    from fusedopt import _ops

    ns = torch.ops.fusedopt_emu
    saved = _ops._NATIVE, _ops.PLANS
    _ops._NATIVE = SimpleNamespace(**{n: getattr(ns, n).default for n in vars(saved[0])})
    _ops.PLANS = SimpleNamespace(**{n: getattr(ns, n).default for n in _ops.PLAN_OPS})
    try:
        yield
    finally:
        _ops._NATIVE, _ops.PLANS = saved


def plan_case(config, scaler, channels_last):
    kw = dict(scaler=scaler, channels_last=channels_last)
    with pytest.MonkeyPatch.context() as mp:
        with emulated_cuda_kernels():
            plans = run_plan_case(config, 6, True, mp, **kw)
            ed.clear_launch_log()
            lists = run_plan_case(config, 6, False, mp, **kw)
            assert ed.launch_log(), "the list ops did not launch emulated kernels"
        cpu = run_plan_case(config, 6, True, mp, **kw)
    buckets = planned_buckets(plans[1])
    assert buckets and all(b.native_plan.id >= CUDA_FIRST_ID for b in buckets), "no emulated CUDA plan was made"
    assert plans[2].count(True) >= 3  # steps 1, 4 and 5 ran on a kept plan
    assert not any(b.native_plan.id >= CUDA_FIRST_ID for b in planned_buckets(cpu[1]))
    assert_same_run(plans, lists)
    if "clip" in config.split() or scaler:
        # a global norm: CUDA's sum of squares may differ from the CPU's by
        # SUMSQ_RTOL (tests/cuda_common.py), the clip coefficient by half that,
        # which moves six steps' params by a few ulps at most
        for p, q in zip(plans[0], cpu[0]):
            tol = 8 * ULP[p.dtype]
            torch.testing.assert_close(p.detach(), q.detach(), rtol=tol, atol=tol)
    else:
        assert_same_run(plans, cpu)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_cuda_plan_steps(cuda_emu, config):
    cuda_emu.run(plan_case, config=config, scaler=False, channels_last=False)


@pytest.mark.parametrize("config", ["adamw clip", "sgd nesterov clip", "bf16 stochastic rounding"])
def test_cuda_plan_steps_under_the_grad_scaler_and_channels_last(cuda_emu, config):
    cuda_emu.run(plan_case, config=config, scaler=True, channels_last=True)


def duplicates_case():
    # a param listed twice (tied weights): the Python step runs the occurrences
    # in rounds (fusedopt/_repeats.py), so no launch has two blocks writing one
    # element (the emulation would report it), and the result is the CPU's
    import fusedopt

    results = []
    for emulated in (True, False):
        gen = torch.Generator().manual_seed(0)
        q = torch.nn.Parameter(torch.randn(70_000, generator=gen))
        other = torch.nn.Parameter(torch.randn(7, generator=gen))
        with pytest.warns(UserWarning, match="duplicate parameters"):
            opt = fusedopt.AdamW([q, other, q], lr=0.1, amsgrad=True)
        ed.clear_launch_log()
        with emulated_cuda_kernels() if emulated else contextlib.nullcontext():
            for _ in range(2):
                q.grad, other.grad = torch.randn(70_000, generator=gen), torch.randn(7, generator=gen)
                opt.step()
        assert bool(ed.kernel_launches("rule_kernel<fusedopt::AdamRule")) == emulated
        results.append((q.detach(), other.detach(), float(opt.state[q]["step"])))
    (qe, oe, se), (qc, oc, sc) = results
    assert torch.equal(qe, qc) and torch.equal(oe, oc) and se == sc == 4.0


def test_duplicate_params_run_in_rounds(cuda_emu):
    cuda_emu.run(duplicates_case)
