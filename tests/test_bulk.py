"""fusedopt._bulk: the whole-list checks of reused buckets. The C versions
(csrc/python/bulk.c) must answer exactly as the Python ones, which are the
fallback where the C module is not built."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch

from fusedopt import _bulk, _ops

try:
    from fusedopt import _bulk_c
except ImportError:  # a fallback run, or a tree without a native build
    _bulk_c = None

needs_c = pytest.mark.skipif(_bulk_c is None, reason="fusedopt._bulk_c is not built")
PY = _bulk.python


def test_the_c_module_serves_wherever_the_native_kernels_do():
    # built together: a native build without it would quietly pay the Python cost
    if _ops.CPU_LIB.loaded:
        assert _bulk.IMPLEMENTATION == "c"
        assert _bulk.attrs is _bulk_c.attrs


def test_disable_native_means_python_checks_too():
    env = dict(os.environ, FUSEDOPT_DISABLE_NATIVE="1")
    out = subprocess.run(
        [sys.executable, "-c", "import fusedopt._bulk as b; print(b.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    assert out.stdout.strip() == "python"


def _cases(seed: int):
    """Lists of objects and their mutations: the same, one element replaced,
    shorter, longer, empty."""
    rng = random.Random(seed)
    objs = [torch.zeros(1) for _ in range(rng.randint(0, 40))]
    yield objs, list(objs)
    if objs:
        other = list(objs)
        other[rng.randrange(len(objs))] = torch.zeros(1)
        yield objs, other
        yield objs, objs[:-1]
    yield objs, objs + [torch.zeros(1)]
    yield objs, []


@needs_c
@pytest.mark.parametrize("seed", range(6))
def test_same_answers_as_python(seed):
    for a, b in _cases(seed):
        assert _bulk_c.same(a, b) == PY.same(a, b)
        d = dict(zip(range(len(a)), a))
        assert _bulk_c.same(d.values(), b) == PY.same(d.values(), b)
        assert _bulk_c.same(iter(a), b) == PY.same(iter(a), b)


@needs_c
@pytest.mark.parametrize("seed", range(6))
def test_nones_and_types_answer_as_python(seed):
    rng = random.Random(seed)
    objs = [rng.choice([None, torch.zeros(1), torch.nn.Parameter(torch.zeros(1))]) for _ in range(rng.randint(0, 30))]
    mask = [o is not None for o in objs]
    assert _bulk_c.nones_match(objs, mask) and PY.nones_match(objs, mask)
    for flipped in range(len(objs)):
        wrong = list(mask)
        wrong[flipped] = not wrong[flipped]
        assert not _bulk_c.nones_match(objs, wrong) and not PY.nones_match(objs, wrong)
    assert _bulk_c.nones_match(objs, mask + [True]) == PY.nones_match(objs, mask + [True]) is False
    for tp in (torch.Tensor, torch.nn.Parameter, type(None)):
        assert _bulk_c.all_type(objs, tp) == PY.all_type(objs, tp)
    assert _bulk_c.all_type([], torch.Tensor) and PY.all_type([], torch.Tensor)


@needs_c
def test_attrs_and_take_answer_as_python():
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(9)]
    for i, p in enumerate(params):
        if i % 3:
            p.grad = torch.ones(2)
    grads = _bulk_c.attrs(params, "grad")
    assert _bulk_c.same(grads, PY.attrs(params, "grad"))
    index = [8, 0, 3, 3, 5]
    assert _bulk_c.same(_bulk_c.take(grads, index), PY.take(grads, index))
    assert _bulk_c.take(grads, []) == []
    with pytest.raises(IndexError):
        _bulk_c.take(grads, [9])
    with pytest.raises(AttributeError):
        _bulk_c.attrs(params + [object()], "grad")


@needs_c
def test_items_are_answers_as_python():
    t = [torch.zeros(1) for _ in range(4)]
    dicts = [{"exp_avg": t[0], "step": t[1]}, {"exp_avg": t[2]}]
    keys = ["exp_avg", "step", "exp_avg"]
    ds = [dicts[0], dicts[0], dicts[1]]
    for expected in ([t[0], t[1], t[2]], [t[0], t[3], t[2]], [t[0], t[1], t[3]]):
        assert _bulk_c.items_are(ds, keys, expected) == PY.items_are(ds, keys, expected)
    # a key that is gone reads as None, like dict.get
    assert _bulk_c.items_are([{}], ["step"], [None]) == PY.items_are([{}], ["step"], [None]) is True
    assert _bulk_c.items_are([{}], ["step"], [t[0]]) == PY.items_are([{}], ["step"], [t[0]]) is False
    for impl in (_bulk_c, PY):
        with pytest.raises(ValueError, match="differ in length"):
            impl.items_are(ds, keys, [t[0]])
        with pytest.raises(TypeError):
            impl.items_are([object()], ["step"], [None])


@needs_c
def test_c_versions_refuse_what_is_not_a_list():
    with pytest.raises(TypeError, match="must be a list"):
        _bulk_c.attrs((torch.zeros(1),), "grad")
    with pytest.raises(TypeError, match="must be a list"):
        _bulk_c.same([], ())
    with pytest.raises(TypeError, match="takes 2 arguments"):
        _bulk_c.take([])


@needs_c
def test_a_getter_that_shortens_the_list_does_not_crash():
    class Shrinking:
        @property
        def grad(self):
            objs.clear()
            return 1

    objs = [Shrinking(), Shrinking()]
    with pytest.raises(IndexError):
        _bulk_c.attrs(objs, "grad")


def test_a_group_whose_params_are_a_tuple_steps_as_torch():
    import fusedopt

    def run(make):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(5)) for _ in range(3)]
        opt = make(ps)
        opt.param_groups[0]["params"] = tuple(ps)  # torch's step takes any sequence
        for _ in range(3):
            for p in ps:
                p.grad = torch.randn(5)
            opt.step()
        return [p.detach().clone() for p in ps]

    want = run(lambda ps: torch.optim.AdamW(ps, lr=0.1))
    got = run(lambda ps: fusedopt.AdamW(ps, lr=0.1))
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w)


def test_info_names_which_loops_serve():
    assert _ops.backend_info()["libraries"]["fusedopt._bulk_c"] == _bulk.REASON
    assert ("loaded" in _bulk.REASON) == (_bulk.IMPLEMENTATION == "c")
