"""The CPU kernels' stochastic rounding equals the plain-torch reference's bit
for bit: every rule, bf16 and fp16 params, bf16/fp32 grads, fp32/bf16/8-bit
states, clipping, GradScaler (applied and skipped), sizes with tails, nonzero
global offsets, one and two threads; and the ops refuse bad rounding lists
before writing anything. The lists come from the optimizers' own routing
(their bucket for the step), run once through each backend's op."""

import pytest
import torch

import fusedopt
from fusedopt import _ops
from fusedopt.optim._buckets import call_lists

pytestmark = pytest.mark.skipif(not _ops.CPU_LIB.loaded, reason="the native CPU library is not loaded "
                                "(FUSEDOPT_DISABLE_NATIVE=1 runs these through the reference only)")

RULES = [
    (fusedopt.AdamW, {"weight_decay": 0.1}),
    (fusedopt.Adam, {"amsgrad": True, "weight_decay": 0.01}),
    (fusedopt.SGD, {"momentum": 0.9, "nesterov": True}),
    (fusedopt.SGD, {}),
    (fusedopt.Adagrad, {"weight_decay": 0.01}),
    (fusedopt.Lion, {"weight_decay": 0.1}),
]
# tails of every vector width, a block of 256 and its tail, and one big enough
# for two threads' shares (csrc/cpu/parallel.h: 32768 elements each at least)
SIZES = [(1,), (3,), (17,), (69,), (4099,), (70001,)]


def _lists(cls, kw, dtype, grad_dtype, state_dtype, seed=4):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SIZES]
    opt = cls(params, lr=3e-3, stochastic_rounding=True, seed=11, state_dtype=state_dtype, min_8bit_size=256, **kw)
    if grad_dtype is not dtype and hasattr(params[0], "grad_dtype"):
        for p in params:
            p.grad_dtype = None  # (torch >= 2.13 checks a grad's dtype against this)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(grad_dtype)
    # states from a first (reference or native) step, so that moments are not zero
    opt.step()
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(grad_dtype)
    buckets = opt._bucket_group(opt.param_groups[0])
    native = [b for b in buckets.values() if b.kind == "native"]
    # every param on the kernels (8-bit states: small params keep fp32 states, in a bucket of their own)
    assert sum(len(b.params) for b in native) == len(SIZES)
    return opt, native


def _run(op, bucket, hyper, offsets, scalars):
    params = [p.detach().clone() for p in bucket.params]
    states, counters, masters = (list(map(torch.clone, ts)) for ts in call_lists(bucket))
    keys = [k.clone() for k in bucket.lists["rounding_keys"]]
    op(params, bucket.grads, states, counters, masters, hyper, None, *scalars, rounding_keys=keys,
       rounding_offsets=offsets)
    return params, states, counters, keys


def _same(a, b):
    for x, y in zip(a, b):
        if x.is_floating_point() and x.element_size() == 2:
            x, y = x.view(torch.int16), y.view(torch.int16)
        assert torch.equal(x, y)


@pytest.mark.parametrize("cls,kw", RULES, ids=lambda x: getattr(x, "__name__", str(x)))
@pytest.mark.parametrize("dtype,grad_dtype", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32)])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16, "8bit"])
@pytest.mark.parametrize("amp", ["none", "clip", "scaled", "skipped"])
def test_kernels_equal_reference(cls, kw, dtype, grad_dtype, state_dtype, amp):
    if cls is fusedopt.SGD:
        grad_dtype = dtype  # SGD sends grads of another dtype to torch's SGD, which SR refuses
    opt, buckets = _lists(cls, kw, dtype, grad_dtype, state_dtype)
    group = opt.param_groups[0]
    rule = opt.rule
    grad_scale = found_inf = sumsq = None
    max_norm = max_value = 0.0
    if amp in ("scaled", "skipped"):
        grad_scale = torch.tensor([2.0])
        found_inf = torch.tensor([1.0 if amp == "skipped" else 0.0])
    if amp == "clip":
        sumsq, max_norm, max_value = torch.tensor(1e4), 1.0, 0.5
    native_hyper = tuple(map(float, rule.hyper(group)))
    threads = torch.get_num_threads()
    scalars = (3e-3, None, grad_scale, found_inf, sumsq, max_norm, max_value, False)
    try:
        for bucket in buckets:
            # any global index, mid-Philox-group ones included
            offsets = [0, 5, 1, 2 ** 33 + 3, 7, 0][: len(bucket.params)]
            # the reference's bits are the oracle for either thread count: run it once
            want = _run(rule.op(_ops.reference), bucket, rule.hyper(group), offsets, scalars)
            for n in (1, 2):
                torch.set_num_threads(n)
                got = _run(rule.op(torch.ops.fusedopt), bucket, native_hyper, offsets, scalars)
                _check(got, want, bucket, amp)
    finally:
        torch.set_num_threads(threads)


def _check(got, want, bucket, amp):
    for g, w in zip(got, want):
        _same(g, w)
    before = [p.detach() for p in bucket.params]
    if amp == "skipped":
        _same(got[0], before)
        _same(got[3], bucket.lists["rounding_keys"])
    else:
        assert all(int(k[1]) == int(k0[1]) + 1 for k, k0 in zip(got[3], bucket.lists["rounding_keys"]))
        assert not all(torch.equal(a, b) for a, b in zip(got[0], before))


def test_optimizer_routes_contiguous_cpu_params_to_the_kernels():
    p = torch.nn.Parameter(torch.randn(100, dtype=torch.bfloat16))
    q = torch.nn.Parameter(torch.randn(8, 6, dtype=torch.bfloat16).t())  # not contiguous: the reference
    opt = fusedopt.AdamW([p, q], stochastic_rounding=True)
    p.grad, q.grad = torch.randn_like(p), torch.randn_like(q)
    opt.step()
    assert opt.step_backends() == {"cpu-native": 1, "reference": 1}


def test_bad_rounding_lists_are_refused_before_any_write():
    p = torch.randn(10).to(torch.bfloat16)
    g = torch.randn(10).to(torch.bfloat16)
    m, v, step = torch.zeros(10, dtype=torch.bfloat16), torch.zeros(10, dtype=torch.bfloat16), torch.zeros(())
    hyper = [0.9, 0.999, 1e-8, 0.0, 1.0, 0.0]
    key = torch.tensor([1, 0])
    cases = [
        ([key.float()], [0], "int64 tensor of 2 values"),
        ([torch.tensor([1, 0, 0])], [0], "int64 tensor of 2 values"),
        ([key], [-1], "negative"),
        ([key], [], "one rounding key and one offset per param"),
    ]
    for keys, offsets, message in cases:
        before = (p.clone(), m.clone(), step.clone(), [k.clone() for k in keys])
        with pytest.raises(RuntimeError, match=message):
            torch.ops.fusedopt.adam_([p], [g], [m, v], [step], [], hyper, None, 1e-3, None, None, None, None, 0.0,
                                     rounding_keys=keys, rounding_offsets=offsets)
        assert torch.equal(p.view(torch.int16), before[0].view(torch.int16)) and torch.equal(m, before[1])
        assert torch.equal(step, before[2]) and all(map(torch.equal, keys, before[3]))
    p32 = torch.randn(10)
    with pytest.raises(RuntimeError, match="rounds bfloat16/float16 params; these are float32"):
        torch.ops.fusedopt.adam_([p32], [p32.clone()], [torch.zeros(10), torch.zeros(10)], [step], [], hyper, None,
                                 1e-3, None, None, None, None, 0.0, rounding_keys=[key], rounding_offsets=[0])
    with pytest.raises(RuntimeError, match="no master_params"):
        torch.ops.fusedopt.adam_([p], [g], [m, v], [step], [p.float()], hyper, None, 1e-3, None, None, None, None,
                                 0.0, rounding_keys=[key], rounding_offsets=[0])
