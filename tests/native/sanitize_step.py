"""A small fused step on CUDA through every kernel, for compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck  python tests/native/sanitize_step.py
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool racecheck python tests/native/sanitize_step.py

(`make sanitize` runs both.) Without the caching allocator every tensor is its
own cudaMalloc, so an access past a tensor's end leaves the allocation and
memcheck sees it; inside a cached segment it would land in a neighbour.

Sizes cover aligned and unaligned chunks, tails and a tensor spanning two
chunks. Every step runs twice, on the GPU and on the CPU kernels with the same
inputs, and the script exits non-zero unless the results agree: bit for bit
where no global norm is involved, within a few ulps where one is (the two sum
squares in different precisions; see tests/cuda_common.py)."""

import torch

import fusedopt

DEV = "cuda"
SIZES = (1, 5, 4096, 65537, 70001)
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}

# (optimizer, kwargs, clips): step 1 runs the torch idiom's unscale_ (and, with
# `clips`, clip_grad_norm_); with max_grad_norm the fused step clips by the norm
CONFIGS = (
    (fusedopt.AdamW, dict(amsgrad=True, max_grad_norm=1.0), True),
    (fusedopt.AdamW, dict(master_weights=True), False),
    (fusedopt.SGD, dict(momentum=0.9, nesterov=True, max_grad_norm=1.0), True),
    (fusedopt.SGD, dict(momentum=0.9, dampening=0.1), False),
    # the 8-bit block kernel (partial blocks, block reductions) and the
    # stochastic-rounding store (16-bit params only)
    (fusedopt.AdamW, dict(state_dtype="8bit", min_8bit_size=0, amsgrad=True), False),
    (fusedopt.Lion, dict(state_dtype="8bit", min_8bit_size=0, stochastic_rounding=True), False),
)


def _params(dtype, device):
    gen = torch.Generator().manual_seed(0)
    out = [torch.randn(n, generator=gen).to(dtype) for n in SIZES]
    # an unaligned view: one element into a larger buffer
    buf = torch.randn(SIZES[-1] + 1, generator=gen).to(dtype)
    if device != "cpu":
        out, buf = [x.to(device) for x in out], buf.to(device)
    return [torch.nn.Parameter(x) for x in out] + [torch.nn.Parameter(buf[1:])]


def _run(cls, kw, clips, dtype, device):
    params = _params(dtype, device)
    opt = cls(params, lr=0.01, **kw)
    scaler = fusedopt.GradScaler(device, init_scale=64.0)
    for step in range(3):
        opt.zero_grad()
        gen = torch.Generator().manual_seed(10 + step)
        weights = [torch.randn(p.shape, generator=gen).to(device) for p in params]
        loss = sum((p.float() * w).sum() for p, w in zip(params, weights))
        scaler.scale(loss).backward()
        if step == 1 and dtype is not torch.float16:  # GradScaler refuses to unscale fp16 grads, as torch's
            scaler.unscale_(opt)
            if clips:
                fusedopt.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
    return params, opt


def _compare(name, a, b, dtype, exact):
    a = a.detach().cpu()
    b = b.detach()
    if exact:
        ok = torch.equal(a, b)
    else:
        tol = 4 * ULP[dtype]  # a rounding flip per step, three steps
        ok = torch.allclose(a.float(), b.float(), rtol=tol, atol=tol)
    if not ok:
        diff = (a.float() - b.float()).abs().max().item()
        raise SystemExit(f"sanitize_step: {name} differs from the CPU kernels (max abs difference {diff:.3g})")


def main() -> None:
    assert fusedopt.backend_info()["devices"]["cuda:0"]["backend"] == "cuda", fusedopt.backend_info()
    assert fusedopt.backend_info()["devices"]["cpu"]["backend"] == "cpu-native", fusedopt.backend_info()
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for cls, kw, clips in CONFIGS:
            if kw.get("stochastic_rounding") and dtype is torch.float32:
                continue  # (refused: nothing to round)
            exact = "max_grad_norm" not in kw and not clips
            gpu, og = _run(cls, kw, clips, dtype, DEV)
            cpu, oc = _run(cls, kw, clips, dtype, "cpu")
            torch.cuda.synchronize()
            what = f"{cls.__name__}({kw}) {dtype}"
            for i, (p, q) in enumerate(zip(gpu, cpu)):
                _compare(f"{what} param {i}", p, q, dtype, exact)
                for key, value in oc.state[q].items():
                    # a state in fp32 (masters, states of master-weight params) is
                    # compared at fp32 precision, with the same exactness
                    _compare(f"{what} {key} {i}", og.state[p][key], value,
                             value.dtype if value.is_floating_point() else dtype, exact)
    print("sanitize_step: ok")


if __name__ == "__main__":
    main()
