"""Parameter sets the benchmarks run on: model-shaped ones and synthetic ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Workload:
    name: str
    shapes: tuple[tuple[int, ...], ...]
    about: str
    dtype: torch.dtype = torch.float32
    # each (2-D) param and its grad a transposed view: not contiguous in any layout
    transposed: bool = False
    # the steps it runs in (empty: every step); the others skip it with a note
    only_steps: tuple[str, ...] = ()
    # (implementation, why) pairs of those that cannot take these params; where
    # the step's baseline is one of them, ratios are to torch's foreach AdamW
    without: tuple[tuple[str, str], ...] = ()

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

    @property
    def bytes_scale(self) -> float:
        """Bytes per element over float32's (the steps count bytes for float32)."""
        return torch.empty((), dtype=self.dtype).element_size() / 4

    def describe(self) -> str:
        kind = "" if self.dtype is torch.float32 else f"{str(self.dtype).removeprefix('torch.')} "
        kind += "transposed " if self.transposed else ""
        return f"{self.numel / 1e6:.1f}M {kind}params in {self.tensors} tensors"

    def params(self, dtype=None, device="cpu", seed=0) -> list[torch.nn.Parameter]:
        """Random params with random grads, generated on `device` itself, of the
        workload's dtype (unless `dtype` says otherwise) and layout."""
        dtype = self.dtype if dtype is None else dtype
        gen = torch.Generator(device=device).manual_seed(seed)

        def tensor(s):
            if self.transposed:
                return torch.randn(s[::-1], generator=gen, device=device).to(dtype).t()
            return torch.randn(s, generator=gen, device=device).to(dtype)

        out = []
        for s in self.shapes:
            p = torch.nn.Parameter(tensor(s))
            p.grad = tensor(s)
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
    # params the native kernels do not take: fusedopt runs its plain-torch
    # fallback on them (the AdamW step only: torch's GradScaler takes no complex grads)
    Workload("f64-1000x10K", ((100, 100),) * 1000, "float64 params: fusedopt's fallback", dtype=torch.float64,
             only_steps=("adamw",)),
    Workload("c64-1000x10K", ((100, 100),) * 1000, "complex64 params: fusedopt's fallback", dtype=torch.complex64,
             only_steps=("adamw",),
             without=(("torch-fused", "torch's fused AdamW takes no complex params"),)),
    Workload("T-1000x10K", ((100, 100),) * 1000, "transposed (non-contiguous) params: fusedopt's fallback",
             transposed=True, only_steps=("adamw",)),
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in _ALL}

# What a run measures unless --workloads says otherwise. A workload that does
# not fit the device's free memory is skipped with a message (memory.py), so
# decoder-1B runs where there is room for it. 4x256M is left out on the CPU:
# it adds nothing to 10x1M there but minutes of run time.
DEFAULT_WORKLOADS: dict[str, tuple[str, ...]] = {
    "cpu": ("gpt2-124M", "decoder-1B", "2000x4096", "10x1M", "1000x10K", "100x1K", "f64-1000x10K", "c64-1000x10K",
            "T-1000x10K"),
    "cuda": tuple(WORKLOADS),
}
