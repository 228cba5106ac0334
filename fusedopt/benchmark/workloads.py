"""Parameter sets the benchmarks run on: model-shaped ones and synthetic ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Workload:
    name: str
    shapes: tuple[tuple[int, ...], ...]
    about: str

    @property
    def numel(self) -> int:
        total = 0
        for s in self.shapes:
            n = 1
            for d in s:
                n *= d
            total += n
        return total

    @property
    def tensors(self) -> int:
        return len(self.shapes)

    def describe(self) -> str:
        return f"{self.numel / 1e6:.1f}M params in {self.tensors} tensors"

    def params(self, dtype=torch.float32, device="cpu", seed=0) -> list[torch.nn.Parameter]:
        """Random params with random grads, generated on `device` itself."""
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for s in self.shapes:
            p = torch.nn.Parameter(torch.randn(s, generator=gen, device=device).to(dtype))
            p.grad = torch.randn(s, generator=gen, device=device).to(dtype)
            out.append(p)
        return out


def _decoder_shapes(layers: int, d: int, vocab: int, ffn: int, tied: bool = True) -> tuple[tuple[int, ...], ...]:
    """A pre-LN decoder's params: embeddings, per layer two LayerNorms, fused
    QKV, attention output and a two-layer MLP (weights and biases), final LN."""
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    if not tied:
        shapes.append((vocab, d))
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (ffn, d), (ffn,), (d, ffn), (d,)]
    shapes += [(d,), (d,)]
    return tuple(shapes)


def _uniform(count: int, size: int) -> tuple[tuple[int, ...], ...]:
    return ((size,),) * count


_ALL = (
    # model-shaped: what a training step sees
    Workload("gpt2-124M", ((1024, 768),) + _decoder_shapes(12, 768, 50257, 3072),
             "GPT-2 small: 12 layers, d=768, tied 50257-token embedding"),
    Workload("decoder-1B", _decoder_shapes(16, 2048, 32000, 8192, tied=False),
             "a 0.94B-param decoder: 16 layers, d=2048, FFN 8192, untied embeddings"),
    Workload("2000x4096", _uniform(2000, 4096), "many small tensors (norms, biases): the per-tensor cost"),
    Workload("4x256M", _uniform(4, 256 * 1024 * 1024), "a few huge tensors: memory bandwidth alone"),
    # synthetic: bandwidth, per-tensor cost at scale, per-call cost
    Workload("10x1M", _uniform(10, 1_000_000), "large tensors: memory bandwidth"),
    Workload("1000x10K", _uniform(1000, 10_000), "many medium tensors: per-tensor cost at scale"),
    Workload("100x1K", _uniform(100, 1_000), "small tensors: per-call cost"),
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in _ALL}

# What a run measures unless --workloads says otherwise. A workload that does
# not fit the device's free memory is skipped with a message (memory.py), so
# decoder-1B runs where there is room for it. 4x256M is left out on the CPU:
# it adds nothing to 10x1M there but minutes of run time.
DEFAULT_WORKLOADS: dict[str, tuple[str, ...]] = {
    "cpu": ("gpt2-124M", "decoder-1B", "2000x4096", "10x1M", "1000x10K", "100x1K"),
    "cuda": tuple(WORKLOADS),
}
