"""Training quality of low-memory optimizers on a real task (issue 22): a small
GPT-2-shaped model (transformers' GPT2 config) trained as a character-level
language model on the Python standard library's own source files, which ship
with every Python (no download).

Every optimizer trains the same model from the same initial weights on the same
batches for a fixed budget of steps; the output is the validation loss along
the way and at the end, the training loss curve, the optimizer's own bytes per
param and the time taken, as JSON, with a plot beside it when matplotlib is
there. The optimizers come as factories (params -> optimizer), so rows are one
line each: torch.optim.AdamW in fp32, fusedopt's AdamW with 8-bit states (fp32
params, and bf16 params with and without stochastic rounding), and the 8-bit
AdamWs of bitsandbytes and torchao where they import.

    python -m bench.lowmem_quality --steps 300 --out bench/results/lowmem-quality-cpu.json

The corpus is the standard library's top-level modules in name order, so it
depends on the Python version: the JSON records the version and the corpus's
hash, and only runs with the same hash compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from . import step_memory


@dataclass(frozen=True)
class Config:
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    context: int = 128
    batch: int = 16
    steps: int = 300
    eval_every: int = 25
    eval_batches: int = 8
    lr: float = 3e-3
    weight_decay: float = 0.1
    corpus_chars: int = 3_000_000
    seed: int = 0
    threads: int = 1  # the machine is shared; each row gets the same


TINY = Config(n_layer=1, n_head=2, n_embd=32, context=32, batch=4, steps=4, eval_every=2, eval_batches=2,
              lr=1e-2, corpus_chars=200_000)


def corpus(max_chars: int) -> tuple[str, int]:
    """The standard library's top-level .py files, in name order, up to max_chars."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total, files = [], 0, 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        files += 1
        if total >= max_chars:
            break
    if total == 0:
        raise RuntimeError(f"no Python sources under {stdlib}")
    return "".join(parts)[:max_chars], files


@dataclass
class Data:
    train: torch.Tensor
    val: torch.Tensor
    vocab: int
    about: dict


def load_data(cfg: Config) -> Data:
    text, files = corpus(cfg.corpus_chars)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    cut = int(len(ids) * 0.9)  # the last tenth, unseen in training, is the validation text
    about = {"files": files, "chars": len(text), "vocab": len(chars),
             "sha256": hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:16]}
    return Data(ids[:cut], ids[cut:], len(chars), about)


def windows(ids: torch.Tensor, count: int, context: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(ids) - context, (count,), generator=gen)
    return torch.stack([ids[s:s + context] for s in starts.tolist()])


def make_model(cfg: Config, vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    conf = GPT2Config(vocab_size=vocab, n_positions=cfg.context, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=None, eos_token_id=None, loss_type="ForCausalLM")
    return GPT2LMHeadModel(conf)


def _loss(model, batch: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch, labels=batch).loss  # the model shifts the labels itself


@torch.no_grad()
def evaluate(model, val_batches: list[torch.Tensor]) -> float:
    model.eval()
    loss = sum(_loss(model, b).item() for b in val_batches) / len(val_batches)
    model.train()
    return loss


MEMORY_STEP = 2  # the step measured for peak memory: the optimizers' states exist from the first


def _train_step(model, opt, batch: torch.Tensor) -> float:
    loss = _loss(model, batch)
    loss.backward()
    step_memory.optimizer_step(opt)
    opt.zero_grad(set_to_none=True)
    return loss.item()


# rows whose model trains in a low-precision dtype (no fp32 copy anywhere)
PARAM_DTYPES = {
    "fusedopt AdamW 8bit bf16+SR": torch.bfloat16,
    "fusedopt AdamW 8bit bf16": torch.bfloat16,
}


def train(name: str, factory: Callable, cfg: Config, data: Data) -> dict:
    model = make_model(cfg, data.vocab).to(PARAM_DTYPES.get(name, torch.float32))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = factory(params, cfg)
    val_gen = torch.Generator().manual_seed(cfg.seed + 2)
    val_batches = [windows(data.val, cfg.batch, cfg.context, val_gen) for _ in range(cfg.eval_batches)]
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the same batches for every row
    train_curve, val_curve = [], [(0, evaluate(model, val_batches))]
    step_seconds, memory = 0.0, None
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        batch = windows(data.train, cfg.batch, cfg.context, gen)
        if step == MEMORY_STEP:
            # one step under the profiler (its states exist by now), left out of the step time
            losses: list[float] = []
            memory = step_memory.measure(params, opt, lambda: losses.append(_train_step(model, opt, batch)))
            train_curve.append(losses[0])
        else:
            loss = _loss(model, batch)
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            step_seconds += time.perf_counter() - t0
            opt.zero_grad(set_to_none=True)
            train_curve.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_curve.append((step, evaluate(model, val_batches)))
    n_params = sum(p.numel() for p in params)
    return {"name": name, "final_val_loss": val_curve[-1][1], "val_curve": val_curve, "train_curve": train_curve,
            "params": n_params, "state_bytes_per_param": step_memory.optimizer_bytes(opt) / n_params,
            **(memory or {}),
            "seconds": time.perf_counter() - start, "optimizer_step_seconds": step_seconds}


def _adamw_kwargs(cfg: Config) -> dict:
    return {"lr": cfg.lr, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": cfg.weight_decay}


def optimizers() -> dict[str, Callable]:
    """Every row this environment can run: name -> factory(params, cfg)."""
    import fusedopt

    rows = {
        "torch AdamW fp32": lambda p, cfg: torch.optim.AdamW(p, **_adamw_kwargs(cfg)),
        # bitsandbytes' default min_8bit_size (4096) is fusedopt's too
        "fusedopt AdamW 8bit": lambda p, cfg: fusedopt.AdamW(p, **_adamw_kwargs(cfg), state_dtype="8bit"),
    }
    try:
        import fusedopt

        # bf16 params and 8-bit states: ~2 optimizer-owned bytes per param, no fp32 master
        rows["fusedopt AdamW 8bit bf16+SR"] = lambda p, cfg: fusedopt.AdamW(
            p, **_adamw_kwargs(cfg), state_dtype="8bit", stochastic_rounding=True, seed=cfg.seed)
        rows["fusedopt AdamW 8bit bf16"] = lambda p, cfg: fusedopt.AdamW(p, **_adamw_kwargs(cfg), state_dtype="8bit")
    except Exception:  # noqa: BLE001
        pass
    try:
        import bitsandbytes as bnb

        rows["bitsandbytes AdamW8bit"] = lambda p, cfg: bnb.optim.AdamW8bit(p, **_adamw_kwargs(cfg))
    except Exception:  # noqa: BLE001 - absent or broken: the row is left out
        pass
    try:
        from torchao.optim import AdamW8bit

        # torchao compiles its step (its recommended use); block 256 as bitsandbytes
        rows["torchao AdamW8bit"] = lambda p, cfg: AdamW8bit(p, **_adamw_kwargs(cfg), block_size=256)
    except Exception:  # noqa: BLE001
        pass
    return rows


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in report["rows"]:
        curve = row["train_curve"]
        k = max(1, len(curve) // 30)  # a running mean: per-batch losses are noisy
        smooth = [sum(curve[max(0, i - k + 1):i + 1]) / len(curve[max(0, i - k + 1):i + 1]) for i in range(len(curve))]
        ax_train.plot(range(1, len(curve) + 1), smooth, label=row["name"])
        steps, losses = zip(*row["val_curve"])
        ax_val.plot(steps, losses, marker="o", markersize=3, label=f"{row['name']}: {row['final_val_loss']:.4f}")
    ax_train.set(title="training loss (running mean)", xlabel="step", ylabel="cross-entropy")
    ax_val.set(title="validation loss", xlabel="step", ylabel="cross-entropy")
    for ax in (ax_train, ax_val):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"GPT-2-shaped char LM on the stdlib sources, {report['config']['steps']} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(cfg: Config, names: list[str] | None = None, extra: dict[str, Callable] | None = None) -> dict:
    """Train each row (all available, or those named, in that order); extra rows
    are factories added to the available ones."""
    data = load_data(cfg)
    rows = {**optimizers(), **(extra or {})}
    if names:
        missing = [n for n in names if n not in rows]
        if missing:
            raise SystemExit(f"unknown or unavailable optimizer(s) {missing}; available: {sorted(rows)}")
        rows = {n: rows[n] for n in names}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        results = [train(name, factory, cfg, data) for name, factory in rows.items()]
    finally:
        torch.set_num_threads(threads)
    base = results[0]["final_val_loss"]
    for r in results:
        r["val_loss_vs_first"] = r["final_val_loss"] / base - 1
    return {"config": asdict(cfg), "corpus": data.about, "python": platform.python_version(),
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": results}


def table(report: dict) -> str:
    first = report["rows"][0]["name"]
    lines = [f"| optimizer | final val loss | vs {first} | state B/param | step peak MB | optimizer temp MB "
             "| optimizer step s | total s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        mb = lambda k: f"{r[k] / 2**20:.1f}" if k in r else "-"  # noqa: E731 - (runs under --steps 1 have none)
        lines.append(f"| {r['name']} | {r['final_val_loss']:.4f} | {100 * r['val_loss_vs_first']:+.2f}% | "
                     f"{r['state_bytes_per_param']:.2f} | {mb('step_peak_bytes')} | {mb('optimizer_peak_bytes')} | "
                     f"{r['optimizer_step_seconds']:.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, help=f"the budget (default {Config.steps}; --tiny: {TINY.steps})")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (tests)")
    ap.add_argument("--only", action="append", help="optimizer row(s) to run (repeatable)")
    ap.add_argument("--seed", type=int, help="the weights', batches' and rounding seed (default 0)")
    ap.add_argument("--out", type=Path, help="write the report here as JSON, and a plot beside it")
    args = ap.parse_args(argv)
    base = TINY if args.tiny else Config()
    cfg = Config(**{**asdict(base), "steps": args.steps or base.steps,
                    "seed": base.seed if args.seed is None else args.seed})
    report = run(cfg, args.only)
    print(table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        if plot(report, args.out.with_suffix(".png")):
            print(f"plot: {args.out.with_suffix('.png')}")
    bad = [r["name"] for r in report["rows"] if not math.isfinite(r["final_val_loss"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
