"""Checks over whole lists that a reused bucket cache makes every step, once per
tensor (see optim/_buckets.py): a param's grad, and that the params and their
state tensors are the very objects the buckets were built from.

Even as map() over builtins, each costs 15-90 ns per tensor in the interpreter,
together as much as the native update of a small tensor. fusedopt._bulk_c
(csrc/python/bulk.c) runs the same loops in C; the Python versions below are
the fallback where it is not built (or FUSEDOPT_DISABLE_NATIVE=1), and what its
tests compare it with. Only identity and types are compared, never values: a
Tensor's == is elementwise.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from itertools import repeat
from operator import attrgetter, is_, is_not
from typing import Iterable


def attrs(objs: list, name: str) -> list:
    """[getattr(o, name) for o in objs]"""
    return list(map(attrgetter(name), objs))


def same(a: Iterable, b: list) -> bool:
    """len(a) == len(b) and a[i] is b[i] for every i (``a`` any iterable)."""
    a = a if isinstance(a, list) else list(a)
    return len(a) == len(b) and all(map(is_, a, b))


def all_type(objs: list, tp: type) -> bool:
    """type(o) is tp for every o"""
    return all(map(is_, map(type, objs), repeat(tp)))


def nones_match(objs: list, mask: list) -> bool:
    """len equal and (objs[i] is not None) is mask[i] for every i"""
    return len(objs) == len(mask) and all(map(is_, map(is_not, objs, repeat(None)), mask))


def take(seq: list, index: list) -> list:
    """[seq[i] for i in index]"""
    return list(map(seq.__getitem__, index))


def items_are(dicts: list, keys: list, expected: list) -> bool:
    """dicts[i].get(keys[i]) is expected[i] for every i (equally long lists)."""
    if not len(dicts) == len(keys) == len(expected):
        raise ValueError("items_are: dicts, keys and expected differ in length")
    return all(map(is_, map(dict.get, dicts, keys), expected))


# the Python versions, whichever serves (for the tests that compare the two)
python = SimpleNamespace(
    attrs=attrs, same=same, all_type=all_type, nones_match=nones_match, take=take, items_are=items_are
)
IMPLEMENTATION = "python"
REASON = "disabled by FUSEDOPT_DISABLE_NATIVE=1 (the Python loops serve)"

if os.environ.get("FUSEDOPT_DISABLE_NATIVE", "") in ("", "0"):
    try:
        from ._bulk_c import all_type, attrs, items_are, nones_match, same, take  # noqa: F811
    except ImportError as err:  # not built (a source tree without a build, a pure-Python install)
        REASON = f"not loaded ({err}); the Python loops serve"
    else:
        IMPLEMENTATION = "c"
        REASON = "loaded _bulk_c.abi3.so (reuse checks in C)"

__all__ = ["attrs", "same", "all_type", "nones_match", "take", "items_are", "IMPLEMENTATION", "REASON", "python"]
