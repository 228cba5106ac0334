"""Native plans against torch.optim across what changes between steps (the
scenarios of issue 25's audit; the runner is tests/plan_scenarios.py): storage
replaced under params and states, states replaced or reset, grads changing
layout or dtype, param groups edited; from several threads at once and in a
forked child; and long soaks (marked slow), where memory must stay flat."""

import gc
import multiprocessing
import resource
import threading

import pytest

from fusedopt import _native_plan
from plan_scenarios import EDITS, GRADS, GROUPS, OPTIMIZERS, STATE, STORAGE, Twin, run

FAMILIES = {"storage replaced": STORAGE, "state replaced": STATE, "groups edited": GROUPS}


@pytest.fixture(params=["plans", "list ops"])
def plans(request, monkeypatch):
    monkeypatch.setattr(_native_plan, "ENABLED", _native_plan.ENABLED and request.param == "plans")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_steps_follow_torch_across_edits(name, family, plans):
    twin = run(Twin(name), 24, FAMILIES[family], seed=len(family))
    assert twin.steps >= 12  # most steps step (a refusal is checked too, but says less)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", list(GRADS))
def test_steps_follow_torch_as_grads_change_layout_or_dtype(name, kind, plans):
    twin = run(Twin(name), 16, [], seed=3, grad_kinds=[kind], none_every=3)
    assert twin.steps >= 4


def test_optimizers_in_threads_step_as_torch(plans):
    """Plans are made, bound, stepped and freed from several threads at once
    (one optimizer each): the native registry and the GIL hand-offs hold."""
    errors = []

    def work(k):
        try:
            run(Twin(list(OPTIMIZERS)[k % len(OPTIMIZERS)], seed=k), 30, EDITS, seed=k)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]


def _continue_in_child(twin, queue):
    try:
        run(twin, 8, EDITS, seed=11)
        queue.put({k: t.numpy() for k, t in twin.a.snapshot().items()})
    except BaseException as e:  # noqa: BLE001
        queue.put(repr(e))


def test_a_forked_child_steps_its_copy_as_the_parent_does(plans):
    """A child forked after planned steps inherits the plans (and the native
    registry's state): it goes on exactly as the parent does."""
    twin = run(Twin("AdamW"), 5, [], seed=1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_continue_in_child, args=(twin, queue))
    child.start()
    got = queue.get(timeout=300)
    child.join(timeout=60)
    assert child.exitcode == 0 and not isinstance(got, str), got
    run(twin, 8, EDITS, seed=11)
    mine = {k: t.numpy() for k, t in twin.a.snapshot().items()}
    assert got.keys() == mine.keys()
    for k, x in got.items():
        assert (x == mine[k]).all(), k


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_soak_with_every_edit(name):
    twin = run(Twin(name), 1000, EDITS, seed=7, grad_kinds=list(GRADS), none_every=5)
    assert twin.steps > 500


@pytest.mark.slow
@pytest.mark.parametrize("name", ["AdamW", "SGD momentum"])
def test_soak_memory_stays_flat(name):
    """Plans replaced every few steps (groups replaced, states popped) for
    thousands of steps: no object and no memory is kept for the old ones."""
    twin = Twin(name)
    edits = [EDITS[EDITS.index(e)] for e in EDITS if e.__name__ in ("group_dicts_replaced", "state_popped")]
    run(twin, 200, edits, seed=1)
    gc.collect()
    objects, rss = len(gc.get_objects()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(twin, 3000, edits, seed=2)
    gc.collect()
    assert len(gc.get_objects()) - objects < 200
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 20_000  # KiB: a plan a step was ~9 KiB
