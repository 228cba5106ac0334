"""fusedopt's fp32 CPU step against torch's default CPU optimizers, bit for bit.

torch's default CPU path runs Adam/AdamW/SGD op by op; on x86 (its AVX2 and
AVX-512 kernels) `add_(x, alpha=a)`, `addcmul_(value=)` and `lerp_` each round
once (a fused multiply-add), in the vector body and in the scalar tail alike.
fusedopt's shared math does the same with an explicit fma, so:
- SGD: every optim_db configuration and every flag combination gives torch's
  bits, param and momentum buffer, step after step;
- Adam/AdamW: the bits of torch's default path computed with a correctly rounded
  sqrt. torch's own float sqrt on the CPU is MKL's vector sqrt, within an ulp
  but not always correctly rounded, and nothing outside torch can reproduce it;
  so against torch's actual default fusedopt differs in no more elements than
  torch's own fused=True Adam/AdamW does (whose sqrt is the IEEE one too).

Sizes cover every vector-tail length class and a tensor split across threads.
The suite's fallback pass (FUSEDOPT_DISABLE_NATIVE=1) runs the same tests on
fusedopt.reference, which uses torch's own ops and sqrt."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import fusedopt
from conftest import NATIVE_CPU

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's optimizer test database needs torch's test dependencies (numpy, expecttest)",
)

INFOS = {info.name: info for info in common_optimizers.optim_db if info.name in ("Adam", "AdamW", "SGD")}

# Below AVX2 (a CPU without it, or ATEN_CPU_CAPABILITY=default) torch's kernels
# round a*b + c twice; fusedopt's kernels fuse on every CPU, so the bits differ
# there by an ulp per fused op. Bit-identity is the claim for torch's FMA kernels.
TORCH_FUSES = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
requires_torch_fma = pytest.mark.skipif(
    NATIVE_CPU and not TORCH_FUSES,
    reason=f"torch's {torch.backends.cpu.get_cpu_capability()} CPU kernels round a*b+c twice (no FMA)",
)

# 1..17: every tail length of an 8- and a 16-lane vector; 70003: several threads' shares
SIZES = (1, 3, 8, 15, 16, 17, 100, 4099, 70003)
STEPS = 4


def _params(differentiable: bool):
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(n, generator=gen) for n in SIZES] + [torch.randn(5, 33, generator=gen)]
    if differentiable:  # torch refuses in-place updates of leaves that need grad
        return [t.requires_grad_().clone() for t in leaves]
    return [torch.nn.Parameter(t) for t in leaves]


def _run(cls, kwargs: dict, exact_sqrt: bool = False):
    """STEPS steps on two param groups (the second with its own lr); returns the
    params and the optimizer. With exact_sqrt, torch's Tensor.sqrt is replaced by
    the correctly rounded one for the duration of each step."""
    kwargs = copy.deepcopy(kwargs)  # tensor lr: each optimizer gets its own
    params = _params(bool(kwargs.get("differentiable")))
    opt = cls([{"params": params[:-3]}, {"params": params[-3:], "lr": 0.02}], **kwargs)
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 3
        if exact_sqrt:
            with _correctly_rounded_sqrt():
                opt.step()
        else:
            opt.step()
    return params, opt


def _ieee_sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 sqrt of a float32 tensor: a float64 root
    rounded to float32, then moved to the neighbour whose rounding interval
    holds the exact root. Between adjacent floats a and b, ((a + b) / 2)^2 is
    exact in float64 and never equals x, so each comparison is exact."""
    xd = x.double()
    y = xd.sqrt().float()
    finite = torch.isfinite(y) & (y > 0)
    up = torch.nextafter(y, torch.full_like(y, float("inf")))
    down = torch.nextafter(y, torch.zeros_like(y))
    y = torch.where(finite & (((y.double() + up.double()) / 2) ** 2 < xd), up, y)
    y = torch.where(finite & (((y.double() + down.double()) / 2) ** 2 > xd), down, y)
    return y


class _correctly_rounded_sqrt:
    """torch.Tensor.sqrt of float32 tensors replaced by the IEEE one."""

    def __enter__(self):
        self.orig = torch.Tensor.sqrt
        orig = self.orig
        torch.Tensor.sqrt = lambda t: _ieee_sqrt(t) if t.dtype == torch.float32 else orig(t)

    def __exit__(self, *exc):
        torch.Tensor.sqrt = self.orig


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.int32)


def _differing(a: list, b: list) -> int:
    return sum(int((_bits(x) != _bits(y)).sum()) for x, y in zip(a, b))


def _states(opt, params, key):
    return [opt.state[p][key] for p in params]


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn()


# ----------------------------------------------------------------------------- SGD


def _sgd_configs():
    info = INFOS["SGD"]
    for cfg in common_optimizers._get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float32, info):
        yield pytest.param(cfg.kwargs, id=cfg.desc)


def _default_path(kwargs: dict) -> dict:
    """The same configuration on torch's default path: optim_db's `fused` variants
    name an implementation, not a configuration (torch's fused CPU SGD with
    momentum is itself an ulp away from its default path in a few elements)."""
    return {k: v for k, v in kwargs.items() if k not in ("fused", "foreach")}


@requires_torch_fma
@pytest.mark.parametrize("kwargs", list(_sgd_configs()))
def test_sgd_is_bit_identical_to_torch_for_every_optim_db_configuration(kwargs):
    (pa, oa), (pb, ob) = _quiet(lambda: (_run(fusedopt.SGD, kwargs), _run(torch.optim.SGD, _default_path(kwargs))))
    assert _differing(pa, pb) == 0
    if kwargs.get("momentum", 0.0) != 0.0:
        assert _differing(_states(oa, pa, "momentum_buffer"), _states(ob, pb, "momentum_buffer")) == 0


FLAGS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m in (0.0, 0.9)
    for d in (0.0, 0.3)
    for n in (False, True)
    for wd in (0.0, 0.1)
    for mx in (False, True)
    if not (n and (m == 0 or d != 0))  # torch refuses nesterov without momentum or with dampening
]


@requires_torch_fma
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
def test_sgd_is_bit_identical_to_torch_for_every_flag_combination(flags, tensor_lr):
    kwargs = dict(flags, lr=torch.tensor(0.013) if tensor_lr else 0.013)
    (pa, oa), (pb, ob) = _run(fusedopt.SGD, kwargs), _run(torch.optim.SGD, kwargs)
    assert _differing(pa, pb) == 0
    if flags["momentum"]:
        assert _differing(_states(oa, pa, "momentum_buffer"), _states(ob, pb, "momentum_buffer")) == 0


# ----------------------------------------------------------------------------- Adam


def _adam_configs():
    for name in ("Adam", "AdamW"):
        for cfg in INFOS[name].optim_inputs_func(device="cpu", dtype=torch.float32):
            yield pytest.param(name, cfg.kwargs, id=f"{name}-{cfg.desc}")
        # 1 - beta1 >= 0.5: torch's lerp takes its other formula, end - (1 - w)(end - start)
        yield pytest.param(name, dict(betas=(0.4, 0.9), lr=0.05, weight_decay=0.1), id=f"{name}-lerp-weight-over-half")
        # torch derives the step size (and AdamW's decay factor) from a tensor lr in float32
        yield pytest.param(name, dict(lr=torch.tensor(0.01), weight_decay=0.1, amsgrad=True), id=f"{name}-tensor-lr")


def _adam_state(opt, params):
    keys = [k for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if k in opt.state[params[0]]]
    return [t for k in keys for t in _states(opt, params, k)]


@requires_torch_fma
@pytest.mark.parametrize("name,kwargs", list(_adam_configs()))
def test_adam_is_torchs_default_path_op_for_op(name, kwargs):
    """The native kernels: torch's default path with the IEEE sqrt. The reference
    (the fallback pass) runs torch's ops themselves, sqrt included."""
    (pa, oa) = _run(getattr(fusedopt, name), kwargs)
    (pb, ob) = _run(getattr(torch.optim, name), dict(kwargs, foreach=False), exact_sqrt=NATIVE_CPU)
    assert _differing(pa, pb) == 0
    assert _differing(_adam_state(oa, pa), _adam_state(ob, pb)) == 0


@requires_torch_fma
@pytest.mark.parametrize("name,kwargs", list(_adam_configs()))
def test_adam_is_no_further_from_torchs_default_than_torchs_fused_adam(name, kwargs):
    ours, _ = _run(getattr(fusedopt, name), kwargs)
    default, _ = _run(getattr(torch.optim, name), kwargs)
    fused, _ = _run(getattr(torch.optim, name), dict(kwargs, fused=True))
    assert _differing(ours, default) <= _differing(fused, default)

