"""What the CUDA kernel tests share: identical inputs for a GPU run and a CPU
run, and the comparisons between them.

Where the CUDA kernels and the CPU kernels agree bit for bit, and where not:
- The update rules (csrc/math/) are the same source, evaluated operation by
  operation on both (no compiler contraction: --fmad=false, -ffp-contract=off;
  an explicit single-rounding fma where the rule asks for one, as torch's CPU
  kernels fuse; IEEE division and sqrt), and 16-bit values round to
  nearest-even on both. So an
  update with the same inputs gives the same bits, whatever the alignment (the
  vector and the element-by-element paths do the same arithmetic). The one
  exception in principle: the per-tensor constants come from pow() in fp64,
  and CUDA's pow (<= 2 ulp) and glibc's (< 1 ulp) could round a bias
  correction apart by a double ulp, which changes its float value with a
  probability of about 1e-6.
- An fp16 NaN comes out as 0x7fff on CUDA and keeps its sign on the CPU: no
  test here feeds NaNs to a bitwise comparison.
- grad_stats differs by design: the CPU sums exact products in fp64, CUDA in
  fp32 per thread (at most 33 squares per accumulator, relative error <= 2e-6,
  ~1e-8 in practice; csrc/cuda/amp.cu). So the global norm, and with it the
  clip coefficient, can differ in the last bit: steps that clip by a norm are
  compared within a few ulps, and the bitwise tests clip with a sumsq given to
  both sides.
"""

from __future__ import annotations

import copy

import torch

import rule_calls

DEV = "cuda"
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}

# How far CUDA's sum of squares may be from the exact one, relatively: 33
# roundings in an fp32 accumulator, one more in the CPU's (or the exact sum's)
# fp32 result, one in CUDA's own, all of at most 2^-24.
SUMSQ_RTOL = 35 * 2.0**-24


def cpu_values(shape, seed, dtype=torch.float32, positive=False, scale=1.0):
    """Deterministic values, made on the CPU so both runs get the same ones."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * scale
    return (x.abs() if positive else x).to(dtype)


def on_gpu(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """`x` on the GPU; with an offset, as a view `offset` elements into a larger
    buffer (the caching allocator aligns every buffer to 512 bytes, so offsets of
    1-3 elements misalign it for the kernels' 8/16-byte vector loads)."""
    if offset == 0:
        return x.to(DEV, copy=True)
    buf = torch.zeros(x.numel() + offset, dtype=x.dtype, device=DEV)
    view = buf[offset:].view(x.shape)
    view.copy_(x)
    assert view.data_ptr() % (4 * x.element_size()) != 0, "the view is aligned for a vector load"
    return view


def assert_same_bits(gpu, cpu, what: str) -> None:
    for i, (g, c) in enumerate(zip(gpu, cpu, strict=True)):
        g = g.detach().cpu()
        c = c.detach()
        assert g.dtype == c.dtype and g.shape == c.shape, (what, i, g.dtype, c.dtype, g.shape, c.shape)
        if not torch.equal(g, c):
            diff = (g.float() - c.float()).abs()
            raise AssertionError(
                f"{what}[{i}]: {int((g != c).sum())} of {g.numel()} elements differ from the CPU kernels "
                f"(max abs difference {diff.max().item():.3g})"
            )


def assert_ulps(gpu, cpu, dtype, ulps: float, what: str) -> None:
    tol = ulps * ULP[dtype]
    for i, (g, c) in enumerate(zip(gpu, cpu, strict=True)):
        torch.testing.assert_close(g.detach().cpu().float(), c.detach().float(), rtol=tol, atol=tol,
                                   msg=lambda m, i=i: f"{what}[{i}]: {m}")


def twin_params(shapes, dtype, seed=0, memory_format=None):
    """The same params on the GPU and on the CPU."""
    cpu = []
    for k, shape in enumerate(shapes):
        x = cpu_values(shape, seed + k, dtype)
        if memory_format is not None and x.dim() in (4, 5):
            x = x.contiguous(memory_format=memory_format)
        cpu.append(torch.nn.Parameter(x))
    gpu = [torch.nn.Parameter(p.detach().to(DEV, copy=True)) for p in cpu]
    return gpu, cpu


def set_twin_grads(gpu, cpu, step, grad_dtype=None, scale=1.0, poison=None):
    """The same grads (laid out like their params) on both; `poison` puts an inf
    into the last param's grad."""
    for k, (pg, pc) in enumerate(zip(gpu, cpu)):
        dt = grad_dtype or pc.dtype
        g = cpu_values(pc.shape, 1000 * (step + 1) + k, dt, scale=scale)
        if pc.dim() in (4, 5) and not pc.is_contiguous():
            g = g.contiguous(memory_format=torch.channels_last if pc.dim() == 4 else torch.channels_last_3d)
        if poison and k == len(cpu) - 1 and g.numel():
            g.view(-1)[g.numel() // 2] = float("inf")
        for p, x in ((pc, g.clone()), (pg, g.to(DEV))):
            if x.dtype != p.dtype and hasattr(p, "grad_dtype"):
                p.grad_dtype = x.dtype
            p.grad = x


def state_lists(opt, params, keys):
    return {k: [opt.state[p][k] for p in params if k in opt.state[p]] for k in keys}


def adam_op(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, masters=(), lr=0.01,
            weight_decay=0.1, amsgrad=False, maximize=False, grad_scale=None, found_inf=None, sumsq=None,
            max_norm=0.0):
    """torch.ops.fusedopt.adam_ (AdamW, betas 0.9/0.999), by keyword."""
    rule_calls.adam(torch.ops.fusedopt.adam_, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                    list(masters), lr, None, 0.9, 0.999, 1e-8, weight_decay, True, amsgrad, maximize, grad_scale,
                    found_inf, sumsq, max_norm)


def sgd_op(params, grads, momentum_buffers, momentum_first, *, lr=0.05, momentum=0.9, dampening=0.1,
           weight_decay=0.01, nesterov=False, maximize=False, grad_scale=None, found_inf=None, sumsq=None,
           max_norm=0.0):
    """torch.ops.fusedopt.sgd_, by keyword."""
    rule_calls.sgd(torch.ops.fusedopt.sgd_, params, grads, momentum_buffers, momentum_first, [], lr, None, momentum,
                   dampening, weight_decay, nesterov, maximize, grad_scale, found_inf, sumsq, max_norm)


def snapshot(params, opt):
    """The params and their optimizer states as they are now (copies)."""
    return [p.detach().clone() for p in params], [copy.deepcopy(opt.state[p]) for p in params]


def assert_unchanged(params, opt, before) -> None:
    """Every param and every state tensor bit for bit as in `before` (a
    skipped step must write nothing)."""
    for p, b in zip(params, before[0]):
        assert torch.equal(p.detach(), b)
    for p, b in zip(params, before[1]):
        for k in b:
            assert torch.equal(opt.state[p][k], b[k]), k


def capture_step(opt, params, first_grads):
    """(graph, static grads): the params' grads made static buffers, a first
    step with `first_grads` on a side stream (it makes the states, outside the
    graph), then opt.step() captured. Replay after copying grads into them."""
    static = [torch.zeros_like(p) for p in params]
    for p, g in zip(params, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for g, x in zip(static, first_grads):
            g.copy_(x)
        opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    return graph, static
