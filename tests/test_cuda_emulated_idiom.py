"""torch's AMP idiom with fusedopt's classes through CUDA native plans
(csrc/plan_bound_ops.h over csrc/cuda/plan_ops.cpp's run_unscale) under the
CUDA emulation (tests/cuda_emu): scaler.unscale_ binding the grads to the
plans, the clip and the step re-checking them, give what the emulated list
ops give, bit for bit (tests/test_idiom_plans.py does the same on the CPU
kernels). Cases run in the emulation worker."""

import pytest
import torch

from conftest import requires_native_cpu

pytestmark = [pytest.mark.cuda_emulated, requires_native_cpu]


def idiom_case(config, dtype):
    from fusedopt import _ops
    from plan_cases import planned_buckets
    from test_cuda_emulated_plans import CUDA_FIRST_ID, emulated_cuda_kernels
    from test_idiom_plans import Counting, assert_same, run_idiom

    dtype = getattr(torch, dtype)
    with emulated_cuda_kernels():
        with pytest.MonkeyPatch.context() as mp:
            counting = Counting(_ops.PLANS)
            mp.setattr(_ops, "PLANS", counting)
            planned = run_idiom(config, dtype, 5, True, mp)
            listed = run_idiom(config, dtype, 5, False, mp)
    buckets = planned_buckets(planned[1])
    assert buckets and all(b.native_plan.id >= CUDA_FIRST_ID for b in buckets), "no emulated CUDA plan was made"
    # steps 1-4: unscale_ and the clip's scaling through the plan
    assert counting.counts["plan_unscale_"] == 8
    assert ("plan_grad_stats_", "recheck", 1) in counting.binds
    assert_same(planned, listed)


@pytest.mark.parametrize("config,dtype", [("adamw", "float32"), ("sgd momentum", "bfloat16")])
def test_cuda_plans_serve_the_idiom(cuda_emu, config, dtype):
    cuda_emu.run(idiom_case, config=config, dtype=dtype)
