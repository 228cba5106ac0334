"""python -m fusedopt info | bench | check

info   which backend serves each device and why; what the build targets
bench  the comparison benchmark against torch (fusedopt/benchmark; `bench --help`)
check  a quick self-test: a few AdamW/SGD steps compared with torch.optim
"""

from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    from . import backend_info

    info = backend_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    build = info["build"]
    rt = info["runtime"]
    print(f"fusedopt {build.get('version', '?')}  (torch {rt['torch']}, CUDA {rt['torch_cuda']}, "
          f"Python {rt['python']}, {rt['machine']})")
    cuda = build.get("cuda")
    print(
        "built for: torch >= {}, CPU ISAs {}, {}".format(
            build.get("torch_abi_floor", "?"),
            "/".join(build.get("cpu_isas", [])) or "-",
            f"CUDA {cuda['version']} ({', '.join(cuda['archs'] + cuda['ptx'])})" if cuda else "no CUDA library",
        )
        if build
        else "built for: unknown (no build record: a source tree without a native build?)"
    )
    for name, reason in info["libraries"].items():
        print(f"  {name:18s} {reason}")
    for dev, d in info["devices"].items():
        extra = f" [{d['isa']}]" if d.get("isa") else ""
        if "capability" in d:
            extra = f" [{d['name']}, {d['capability']}]"
        print(f"  {dev:8s} -> {d['backend']}{extra}: {d['reason']}")
    return 0


def _check(args) -> int:
    import torch

    import fusedopt

    torch.manual_seed(0)
    worst = 0.0
    for ours, theirs, kw in (
        (fusedopt.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
        (fusedopt.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
    ):
        a = [torch.nn.Parameter(torch.randn(n)) for n in (7, 1000, 65537)]
        b = [torch.nn.Parameter(p.detach().clone()) for p in a]
        oa, ob = ours(a, **kw), theirs(b, foreach=False, **kw)
        for _ in range(5):
            for p, q in zip(a, b):
                g = torch.randn_like(p)
                p.grad, q.grad = g, g.clone()
            oa.step()
            ob.step()
        err = max((p - q).abs().max().item() for p, q in zip(a, b))
        worst = max(worst, err)
        print(f"{ours.__name__:6s} vs torch.optim: max abs difference {err:.3g}")
    ok = worst < 1e-5
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def _bench(args) -> int:
    from .benchmark.cli import main as bench_main

    return bench_main(args.rest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedopt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_info = sub.add_parser("info", help="backends, build and runtime")
    p_info.add_argument("--json", action="store_true")
    sub.add_parser("check", help="quick self-test against torch.optim")
    sub.add_parser("bench", help="comparison benchmark against torch; options follow (bench --help)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.cmd != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return {"info": _info, "check": _check, "bench": _bench}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
