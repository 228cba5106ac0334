"""What each design of the compiled step would cost, and why the fast one is unsafe.

    .venv/bin/python bench/compiled_route_probe.py [--reps 5] [--workloads 100x1K,10x1M,1000x10K,gpt2-124M]
    .venv/bin/python bench/compiled_route_probe.py --reorder      # the hazard, shown
    .venv/bin/python bench/compiled_route_probe.py --train-step   # a whole compiled train step

A PROTOTYPE FOR MEASURING, NOT A ROUTE OF FUSEDOPT: the "held" ops below are
defined here, in a namespace of their own, and nothing in the package uses them.

The compiled AdamW step (torch.compile(opt.step, fullgraph=True), inductor)
is slower than the eager one because every tensor it names is a graph input,
and each input costs on every call (dynamo's guard, AOT's wrapper, inductor's
size/stride assert): five per Adam param, where the eager step crosses into
native code with the grads alone (a native plan holds the rest). This times,
interleaved on one thread against the eager step, with each rep's ratio:

- current: the compiled route as it is (list ops over params, grads, states);
- current, no size asserts: the same graph compiled with inductor's
  ``size_asserts=False`` (the README says why users should keep them);
- held+params: one op that runs the eager step (its plans, its checks) and
  declares the params written and the grads read, two inputs a param: the
  least a graph can name and stay ordered against other reads of them (the
  states stay unnamed: code in the same graph reading opt.state would meet
  the hazard below);
- held anchor: the same op naming no param at all (one anchor tensor): the
  fastest a compiled step can be, and unsafe: the op writes params the graph
  does not know it writes, so AOT and inductor may compute a read of a param
  placed after the step before it (CSE of two equal reads, or a fusion with
  an earlier kernel). ``--reorder`` shows it happen. Marking the op
  effectful (torch._higher_order_ops.effects) orders it only against other
  effectful ops (inductor's EffectfulKernel depends on the previous one
  alone), not against these reads.

Both held ops also run Python checks (the bucket cache's) that a CUDA graph
replay would skip: under mode="reduce-overhead" a replay after
load_state_dict or a params' .data change would write the old tensors, so
such an op would have to refuse capture (torch.Tag.cudagraph_unsafe).
"""

from __future__ import annotations

import argparse
import statistics
import weakref

import torch

import fusedopt
from fusedopt.benchmark.workloads import WORKLOADS

# run as a script beside it (see the usage above), as that one is
from compiled_vs_eager import _burst

_LIB = torch.library.Library("fusedopt_probe", "DEF")
_LIB.define("held_step_(Tensor(a!) anchor, Tensor(b!)[] params, Tensor[] grads, int opt) -> ()")
_OPTS: dict[int, weakref.ref] = {}


def _held_step(anchor, params, grads, opt):
    _OPTS[opt]()._fused_step(None, None)  # the eager step, plans and checks included


_LIB.impl("held_step_", _held_step, "CPU")
_LIB.impl("held_step_", lambda anchor, params, grads, opt: None, "Meta")

_LIB.define("opaque_add_(Tensor(a!) anchor, int k) -> ()")
_HELD: dict[int, torch.Tensor] = {}


def _opaque_add(anchor, k):
    _HELD[k].add_(1.0)  # a tensor the schema does not name


_LIB.impl("opaque_add_", _opaque_add, "CPU")
_LIB.impl("opaque_add_", lambda anchor, k: None, "Meta")


def _opt(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return fusedopt.AdamW(params, lr=1e-3, weight_decay=0.1)


def _routes(shapes):
    """name -> (optimizer, step callable); each optimizer starts from the same params."""
    opts = {name: _opt(shapes, 0) for name in ("eager", "current", "current, no size asserts", "held+params",
                                               "held anchor")}
    steps = {"eager": opts["eager"].step,
             "current": torch.compile(opts["current"].step, fullgraph=True)}
    nosz = torch.compile(opts["current, no size asserts"].step, fullgraph=True)
    with torch._inductor.config.patch(size_asserts=False):
        nosz()  # compiles now, under the patched option
    steps["current, no size asserts"] = nosz
    anchor = torch.empty(0)
    for name, named in (("held+params", True), ("held anchor", False)):
        opt = opts[name]
        _OPTS[id(opt)] = weakref.ref(opt)
        params = [p for g in opt.param_groups for p in g["params"]] if named else []
        grads = [p.grad for p in params]

        @torch.no_grad()  # as opt.step runs: in-place writes of leaves that require grad
        def held(a=anchor, ps=params, gs=grads, k=id(opt)):
            torch.ops.fusedopt_probe.held_step_(a, ps, gs, k)

        steps[name] = torch.compile(held, fullgraph=True)
    return opts, steps


def time_routes(names, reps):
    for name in names:
        shapes = WORKLOADS[name].shapes
        opts, steps = _routes(shapes)
        for k, s in steps.items():
            if k != "current, no size asserts":  # its compiling call was its first step
                s()
        per = min(_burst(s, 1) for s in steps.values())  # each takes one more step
        calls = max(1, min(200, int(0.05 / max(per, 1e-6))))  # ~50 ms a burst
        t = {k: [] for k in steps}
        for _ in range(reps):
            for k, s in steps.items():
                t[k].append(_burst(s, calls))
        parts = []
        for k, v in t.items():
            ratios = [x / e for x, e in zip(v, t["eager"])]
            parts.append(f"{k} {statistics.median(v) * 1e3:.3f} ms x{statistics.median(ratios):.2f} "
                         f"[{min(ratios):.2f}-{max(ratios):.2f}]")
        print(f"{name}: " + "; ".join(parts), f"({calls} steps a burst)", flush=True)
        # every route took the same number of steps from the same start: the same params
        ref = [p for g in opts["eager"].param_groups for p in g["params"]]
        for k, opt in opts.items():
            same = all(torch.equal(a, b) for a, b in zip(ref, (p for g in opt.param_groups for p in g["params"])))
            if not same:
                print(f"  {k}: params differ from the eager route's")


def time_train_steps(reps, layers=50, width=64):
    """A whole train step (forward, backward, step, zero_grad) of a stack of
    small Linear layers, compiled (the step inside the compiled function; the
    break at backward() is dynamo's) against the same compiled function with
    the step run eagerly (torch.compiler.disable) and against all eager."""
    x = torch.randn(32, width, generator=torch.Generator().manual_seed(1))

    def make(step_eagerly):
        torch.manual_seed(0)
        model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))
        opt = fusedopt.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        step = torch.compiler.disable(opt.step) if step_eagerly else opt.step

        def train_step():
            model(x).square().mean().backward()
            step()
            opt.zero_grad()

        return model, train_step

    runs = {"eager": make(False), "compiled, step inside": make(False), "compiled, step eager": make(True)}
    runs = {k: (m, f if k == "eager" else torch.compile(f)) for k, (m, f) in runs.items()}
    for _, f in runs.values():
        f()
    calls = max(1, min(200, int(0.05 / max(_burst(runs["eager"][1], 1), 1e-6))))
    t = {k: [] for k in runs}
    for _ in range(reps):
        for k, (_, f) in runs.items():
            t[k].append(_burst(f, calls))
    print(f"train step, {layers}x Linear({width}, {width}) ({2 * layers} params): " + "; ".join(
        f"{k} {statistics.median(v) * 1e3:.3f} ms x{statistics.median([a / e for a, e in zip(v, t['eager'])]):.2f}"
        for k, v in t.items()), flush=True)
    # the same compiled forward and backward, the step compiled or eager: the same params
    ref = runs["compiled, step eager"][0].parameters()
    same = all(torch.equal(a, b) for a, b in zip(ref, runs["compiled, step inside"][0].parameters()))
    print(f"  step inside the graph and step eager: params {'equal' if same else 'DIFFER'}")


def show_reorder():
    """An op that writes p without naming it, between two reads of p."""
    p, anchor = torch.zeros(1000), torch.empty(0)
    _HELD[0] = p

    def reads_around(x):
        before = p * x
        torch.ops.fusedopt_probe.opaque_add_(anchor, 0)  # p += 1
        return before, p * x + 1  # eagerly: 0 and 2

    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        p.zero_()
        before, after = torch.compile(reads_around, fullgraph=True, backend=backend)(torch.ones(1000))
        print(f"{backend}: read before the write {float(before[0])} (eager 0.0), "
              f"read after it {float(after[0])} (eager 2.0)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workloads", default="100x1K,10x1M,1000x10K,gpt2-124M")
    ap.add_argument("--reorder", action="store_true")
    ap.add_argument("--train-step", action="store_true", help="time a whole compiled train step instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 64
    if args.reorder:
        show_reorder()
        return
    if args.train_step:
        time_train_steps(args.reps)
        return
    print(f"torch {torch.__version__}, inductor, one thread, {args.reps} interleaved reps; "
          "time a step, x compiled/eager (median [range])")
    time_routes(args.workloads.split(","), args.reps)


if __name__ == "__main__":
    main()
