"""How the ops take their Tensor[] arguments (csrc/raw_handles.h,
csrc/python_gil.h): as the dispatcher's own handles, released when the call
returns or is refused, with the GIL held once for the lot. Each op must let
go of every tensor it was passed on every path (or a model's grads would
outlive zero_grad()), compute the same from several Python threads at once as
from one, and the libraries must reach Python's GIL functions only weakly, so
that they still load where no Python is."""

import threading
from pathlib import Path

import pytest
import torch

import fusedopt
import rule_calls
from conftest import requires_native_cpu
from elf_tools import undefined_symbols

pytestmark = requires_native_cpu

F = torch.ops.fusedopt


def _adam_lists(n=5):
    ps = [torch.randn(k + 1) for k in range(n)]
    return [ps, [torch.randn_like(p) for p in ps], [torch.zeros_like(p) for p in ps],
            [torch.zeros_like(p) for p in ps], [], [torch.zeros(()) for _ in ps], []]


def _adam(lists, grad_scale=None, found_inf=None, sumsq=None):
    rule_calls.adam(F.adam_, *lists, 1e-3, None, 0.9, 0.999, 1e-8, 0.01, True, False, False, grad_scale, found_inf,
                    sumsq, 1.0, 0.0)


def _sgd_lists(n=5):
    ps = [torch.randn(k + 1) for k in range(n)]
    return [ps, [torch.randn_like(p) for p in ps], [torch.zeros_like(p) for p in ps],
            [torch.ones((), dtype=torch.bool) for _ in ps], []]


def _sgd(lists):
    rule_calls.sgd(F.sgd_, *lists, 0.1, None, 0.9, 0.0, 0.0, False, False, None, None, None, 0.0, 0.0)


def _counts(lists):
    return [[t._use_count() for t in ts] for ts in lists]


CALLS = {
    "adam_": (_adam_lists, _adam),
    "sgd_": (_sgd_lists, _sgd),
    "grad_stats_": (lambda: [[torch.randn(k + 1) for k in range(5)]],
                    lambda l: F.grad_stats_(l[0], None, torch.zeros(1), torch.zeros(1), 0.0)),
    "unscale_": (lambda: [[torch.randn(k + 1) for k in range(5)]],
                 lambda l: F.unscale_(l[0], torch.zeros(1), torch.full((1,), 0.5))),
    "clip_value_": (lambda: [[torch.randn(k + 1) for k in range(5)]], lambda l: F.clip_value_(l[0], 0.5)),
}


@pytest.mark.parametrize("op", sorted(CALLS))
def test_an_op_lets_go_of_every_tensor_it_was_passed(op):
    make, call = CALLS[op]
    lists = make()
    base = _counts(lists)
    call(lists)
    assert _counts(lists) == base


def _refusals():
    # each refused after the op took all of its lists, at a different check
    def wrong_count(l):
        l[1].pop()

    def strided(l):
        l[2][4] = torch.zeros(10)[::2]

    def wrong_dtype(l):
        l[3][4] = torch.zeros(5, dtype=torch.float64)

    def wrong_steps(l):
        l[5][0] = torch.zeros((), dtype=torch.int64)

    return {"grads short": wrong_count, "strided state": strided, "float64 state": wrong_dtype,
            "int64 step": wrong_steps}


@pytest.mark.parametrize("spoil", sorted(_refusals()))
def test_a_refused_call_lets_go_of_every_tensor_and_writes_nothing(spoil):
    lists = _adam_lists()
    _refusals()[spoil](lists)
    before = [[t.clone() for t in ts if t.device.type == "cpu"] for ts in lists]
    base = _counts(lists)
    with pytest.raises(RuntimeError, match="fusedopt: "):
        _adam(lists)
    assert _counts(lists) == base
    after = [[t for t in ts if t.device.type == "cpu"] for ts in lists]
    for was, now in zip(before, after):
        for a, b in zip(was, now):
            assert torch.equal(a, b)


def test_ops_called_from_many_python_threads_compute_what_one_thread_does():
    # the GIL is taken inside the op while other threads run ops and Python:
    # a deadlock or a lost reference would show here (bounded, not hung)
    torch.manual_seed(1)
    work = [_adam_lists(200) for _ in range(4)]
    expected = [[[t.clone() for t in ts] for ts in lists] for lists in work]
    for lists in expected:
        for _ in range(20):
            _adam(lists, sumsq=torch.full((1,), 4.0))
    base = [_counts(lists) for lists in work]
    errors = []

    def run(lists):
        try:
            for _ in range(20):
                _adam(lists, sumsq=torch.full((1,), 4.0))
                sum(t.numel() for t in lists[0])  # Python work between the calls
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(lists,)) for lists in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "an op call did not return"
    assert not errors, errors
    for lists, want, counts in zip(work, expected, base):
        assert _counts(lists) == counts
        for got_list, want_list in zip(lists, want):
            for got, exp in zip(got_list, want_list):
                assert torch.equal(got, exp)


def test_libraries_reach_python_only_through_weak_symbols():
    # a strong reference to a CPython function would tie the libraries to a
    # Python at load time; weak ones bind where there is one, else stay null
    libs = sorted(Path(fusedopt.__file__).resolve().parent.glob("_C*.so"))  # _C, and _C_cuda where built
    assert libs
    for lib in libs:
        python = [(kind, name) for kind, name, _ in undefined_symbols(lib) if name.startswith(("Py", "_Py"))]
        assert ("w", "PyGILState_Ensure") in python, lib
        assert all(kind == "w" for kind, _ in python), python
