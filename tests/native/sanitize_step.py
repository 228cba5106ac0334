"""A small fused step on CUDA through every kernel, for compute-sanitizer:

    compute-sanitizer --tool memcheck  python tests/native/sanitize_step.py
    compute-sanitizer --tool racecheck python tests/native/sanitize_step.py

(`make sanitize` runs both.) Sizes cover aligned and unaligned chunks, tails
and a tensor spanning two chunks; exits non-zero if the results are wrong."""

import torch

import fusedopt

DEV = "cuda"
SIZES = (1, 5, 4096, 65537, 70001)


def main() -> None:
    assert fusedopt.backend_info()["devices"]["cuda:0"]["backend"] == "cuda", fusedopt.backend_info()
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for cls, kw in (
            (fusedopt.AdamW, dict(amsgrad=True, max_grad_norm=1.0)),
            (fusedopt.AdamW, dict(master_weights=True)),
            (fusedopt.SGD, dict(momentum=0.9, nesterov=True, max_grad_norm=1.0)),
        ):
            params = [torch.nn.Parameter(torch.randn(n, device=DEV).to(dtype)) for n in SIZES]
            # an unaligned view: offset by one element inside a larger buffer
            buf = torch.randn(SIZES[-1] + 1, device=DEV).to(dtype)
            params.append(torch.nn.Parameter(buf[1:]))
            opt = cls(params, lr=0.01, **kw)
            scaler = fusedopt.GradScaler(DEV, init_scale=64.0)
            for step in range(3):
                opt.zero_grad()
                loss = sum((p.float() * torch.randn_like(p, dtype=torch.float32)).sum() for p in params)
                scaler.scale(loss).backward()
                if step == 1:
                    scaler.unscale_(opt)
                    fusedopt.clip_grad_norm_(params, 1.0)
                scaler.step(opt)
                scaler.update()
            torch.cuda.synchronize()
            assert all(torch.isfinite(p).all() for p in params), (cls, dtype)
    print("sanitize_step: ok")


if __name__ == "__main__":
    main()
