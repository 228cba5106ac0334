"""Bad input gets a clear error naming the problem, and nothing is modified."""

import pytest
import torch

import fusedopt
import rule_calls
from conftest import requires_native_cpu


def _params():
    return [torch.nn.Parameter(torch.randn(5))]


def _message(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


ADAM_BAD = [
    dict(lr=-1.0),
    dict(eps=-1.0),
    dict(betas=(1.0, 0.9)),
    dict(betas=(0.9, -0.1)),
    dict(weight_decay=-0.1),
    dict(betas=(torch.tensor(0.9), 0.999)),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(lr=torch.tensor(0.1), foreach=True),
    dict(betas=(torch.tensor([0.9, 0.8]), torch.tensor(0.99))),
    dict(fused=True, foreach=True),
]


@pytest.mark.parametrize("kwargs", ADAM_BAD, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_constructor_errors_are_torchs(name, kwargs):
    ours = _message(lambda: getattr(fusedopt, name)(_params(), **kwargs))
    theirs = _message(lambda: getattr(torch.optim, name)(_params(), **kwargs))
    assert ours == theirs


SGD_BAD = [
    dict(lr=-0.1),
    dict(momentum=-0.5),
    dict(weight_decay=-1.0),
    dict(nesterov=True),
    dict(nesterov=True, momentum=0.9, dampening=0.1),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(fused=True, foreach=True),
]


@pytest.mark.parametrize("kwargs", SGD_BAD, ids=str)
def test_sgd_constructor_errors_are_torchs(kwargs):
    ours = _message(lambda: fusedopt.SGD(_params(), **kwargs))
    theirs = _message(lambda: torch.optim.SGD(_params(), **kwargs))
    assert ours == theirs


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(max_grad_norm=0.0), ValueError, "max_grad_norm"),
        (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm"),
        (dict(max_grad_norm=float("inf")), ValueError, "max_grad_norm"),
        (dict(max_grad_norm="1"), TypeError, "max_grad_norm"),
        (dict(state_dtype=torch.int8), ValueError, "state_dtype"),
        (dict(master_weights=1), TypeError, "master_weights"),
    ],
)
def test_fusedopt_options_are_checked(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fusedopt.AdamW(_params(), **kwargs)


def test_duplicate_params_are_refused_as_in_torch():
    p = torch.nn.Parameter(torch.randn(3))
    assert _message(lambda: fusedopt.SGD([{"params": [p]}, {"params": [p]}])) == _message(
        lambda: torch.optim.SGD([{"params": [p]}, {"params": [p]}])
    )


@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.AdamW])
def test_sparse_grads_refused_before_anything_changes(cls):
    dense = torch.nn.Parameter(torch.randn(6))
    sparse = torch.nn.Parameter(torch.randn(6))
    other_group = torch.nn.Parameter(torch.randn(6))
    opt = cls([{"params": [other_group]}, {"params": [dense, sparse]}], lr=0.1)
    for p in (dense, other_group):
        p.grad = torch.randn(6)
    sparse.grad = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), torch.ones(2), (6,))
    before = [p.detach().clone() for p in (dense, sparse, other_group)]
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    for p, b in zip((dense, sparse, other_group), before):
        assert torch.equal(p.detach(), b)
    assert all(float(st["step"]) == 0 for st in opt.state.values())


# -- the ops themselves: direct callers get the same protection ---------------------


def _adam_args(params, grads, m=None, v=None, steps=None):
    m = m if m is not None else [torch.zeros_like(p) for p in params]
    v = v if v is not None else [torch.zeros_like(p) for p in params]
    steps = steps if steps is not None else [torch.zeros(()) for _ in params]
    return (params, grads, m, v, [], steps, [], 0.1, None, 0.9, 0.999, 1e-8, 0.0, True, False, False, None, None, None, 0.0)


@requires_native_cpu
@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a[1].pop(), "grads has 1 tensors but params has 2"),
        (lambda a: a[1].__setitem__(0, torch.randn(4)), r"grads\[0\] has 4 elements but params\[0\] has 3"),
        (lambda a: a[2].__setitem__(1, torch.zeros(20, 2).t()), r"exp_avgs\[1\] is not laid out like params\[1\]"),
        (lambda a: a[0].__setitem__(1, torch.zeros(80)[::2]), r"params\[1\] is neither contiguous nor densely laid out"),
        (lambda a: a[1].__setitem__(1, torch.randn(40, dtype=torch.float64)), r"grads\[1\] has dtype Double"),
        (lambda a: a[5].__setitem__(0, torch.zeros((), dtype=torch.float64)), r"steps\[0\] must be Float"),
        (lambda a: a[2].__setitem__(1, torch.zeros(40, dtype=torch.bfloat16)), r"exp_avgs\[1\] has dtype BFloat16 unlike"),
    ],
)
def test_op_refuses_bad_lists_and_changes_nothing(mutate, match):
    params = [torch.randn(3), torch.randn(40)]
    grads = [torch.randn(3), torch.randn(40)]
    args = list(_adam_args(params, grads))
    mutate(args)
    snapshot = [[t.clone() for t in lst] for lst in args[:6]]
    with pytest.raises(RuntimeError, match=match):
        rule_calls.adam(torch.ops.fusedopt.adam_, *args)
    for lst, snap in zip(args[:6], snapshot):
        for t, s in zip(lst, snap):
            assert torch.equal(t, s)


def test_state_dtype_float16_is_refused_for_adam():
    with pytest.raises(ValueError, match="underflow float16"):
        fusedopt.AdamW(_params(), state_dtype=torch.float16)
    fusedopt.SGD(_params(), momentum=0.9, state_dtype=torch.float16)  # a momentum buffer is fine


@requires_native_cpu
def test_op_refuses_unsupported_param_dtype():
    p = [torch.randn(4, dtype=torch.float64)]
    with pytest.raises(RuntimeError, match=r"params\[0\] has dtype Double; the native kernels take"):
        rule_calls.adam(torch.ops.fusedopt.adam_, *_adam_args(p, [torch.randn(4, dtype=torch.float64)]))
