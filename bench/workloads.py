"""Parameter sets the benchmarks run on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Workload:
    name: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numel(self) -> int:
        total = 0
        for s in self.shapes:
            n = 1
            for d in s:
                n *= d
            total += n
        return total

    def params(self, dtype=torch.float32, device="cpu", seed=0) -> list[torch.nn.Parameter]:
        """Random params with random grads, generated on `device` itself."""
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for s in self.shapes:
            p = torch.nn.Parameter(torch.randn(s, generator=gen, device=device).to(dtype))
            p.grad = torch.randn(s, generator=gen, device=device).to(dtype)
            out.append(p)
        return out


# The CPU sets of the foundation issue: large tensors (bandwidth), many medium
# ones (per-tensor overhead at scale), and many small ones (per-call overhead).
CPU_WORKLOADS = {
    "10x1M": Workload("10x1M", ((1_000_000,),) * 10),
    "1000x10K": Workload("1000x10K", ((10_000,),) * 1000),
    "100x1K": Workload("100x1K", ((1_000,),) * 100),
}


def _decoder_shapes(layers: int, d: int, vocab: int, ffn: int, tied: bool = True) -> tuple[tuple[int, ...], ...]:
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    if not tied:
        shapes.append((vocab, d))
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (ffn, d), (ffn,), (d, ffn), (d,)]
    shapes += [(d,), (d,)]
    return tuple(shapes)


# The GPU sets of the CUDA issue.
GPU_WORKLOADS = {
    "gpt2-124M": Workload("gpt2-124M", ((1024, 768),) + _decoder_shapes(12, 768, 50257, 3072)),
    "decoder-1B": Workload("decoder-1B", _decoder_shapes(16, 2048, 32000, 8192, tied=False)),
    "2000x4096": Workload("2000x4096", ((4096,),) * 2000),
    "4x256M": Workload("4x256M", ((256 * 1024 * 1024,),) * 4),
}
