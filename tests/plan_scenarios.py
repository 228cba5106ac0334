"""Native plans against torch.optim under the edits a training script (or a
library around it) makes between steps: storage replaced under params and
states, states replaced or reset, grads of another layout or dtype, param
groups added, deleted, replaced and reordered (tests/test_plan_scenarios.py).

A Twin runs fusedopt and torch.optim side by side on equal params with equal
grads, applies each edit to both sides the same way, and after every step
checks that both did the same thing: stepped to the same values, or refused
with the same kind of error, fusedopt having modified nothing. torch's side is
then set to fusedopt's values, so that each step is compared from equal
states and rounding differences do not pile up over long runs."""

from __future__ import annotations

import random

import torch

import fusedopt
from helpers import fp32_tol

OPTIMIZERS = {
    "AdamW": (fusedopt.AdamW, torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
    "Adam amsgrad": (fusedopt.Adam, torch.optim.Adam, dict(lr=0.05, amsgrad=True)),
    "SGD momentum": (fusedopt.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2)),
    "SGD": (fusedopt.SGD, torch.optim.SGD, dict(lr=0.1)),
}
SHAPES = [(6, 5), (7,), (1,), (3, 4), (2, 3, 4, 4), (9,)]


class Side:
    """One library's half of a Twin: every param ever made (in the same order
    on both sides, so that the i-th params correspond) and the optimizer."""

    def __init__(self, cls, kw, params):
        self.params = params
        self.opt = cls(params[:3], **kw)
        self.opt.add_param_group({"params": params[3:], "lr": kw["lr"] / 2})

    def index(self, p) -> int:
        return next(i for i, q in enumerate(self.params) if q is p)

    def saved(self) -> list:
        return [(p.detach().clone(), {k: v.clone() for k, v in self.opt.state[p].items()} if p in self.opt.state
                 else None) for p in self.params]

    def restore(self, saved: list) -> None:
        with torch.no_grad():
            for p, (value, state) in zip(self.params, saved):
                p.copy_(value)
                if state is None:
                    self.opt.state.pop(p, None)
                else:
                    self.opt.state[p] = state

    def snapshot(self) -> dict:
        """(param index, None or state key) -> a copy of that tensor."""
        out = {}
        for i, p in enumerate(self.params):
            out[i, None] = p.detach().clone()
            for k, v in self.opt.state.get(p, {}).items():
                out[i, k] = v.to_dense() if v.is_sparse else v.clone()
        return out


class Twin:
    def __init__(self, name: str, seed: int = 0):
        cls, torch_cls, kw = OPTIMIZERS[name]
        self.name, self.kw = name, kw
        self.sgd = name.startswith("SGD")
        gen = torch.Generator().manual_seed(seed)
        base = [torch.randn(s, generator=gen) for s in SHAPES]
        base[4] = base[4].contiguous(memory_format=torch.channels_last)  # a layout the kernels take too
        self.a = Side(cls, kw, [torch.nn.Parameter(t.clone(memory_format=torch.preserve_format)) for t in base])
        self.b = Side(torch_cls, kw, [torch.nn.Parameter(t.clone(memory_format=torch.preserve_format)) for t in base])
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.steps = self.refusals = 0

    # -- stepping ------------------------------------------------------------------------------

    def grads(self, none=(), make=None):
        """New grads for both sides (None for the params at indices in `none`)."""
        for i, (x, y) in enumerate(zip(self.a.params, self.b.params)):
            if i in none:
                x.grad = y.grad = None
                continue
            g = make(x, self.gen) if make else torch.randn(x.shape, generator=self.gen).to(x.dtype)
            if not g.is_sparse and g.dim() == 4 and make is None:
                g = g.contiguous(memory_format=torch.channels_last)
            for t in (x, y):
                if g.dtype != t.dtype and hasattr(t, "grad_dtype"):
                    t.grad_dtype = None  # torch >= 2.12 checks a grad's dtype on assignment
                t.grad = g.clone()

    def step(self):
        """Both sides step; both succeed alike or refuse alike."""
        before = self.a.snapshot()
        torch_before = self.b.saved()
        try:
            self.b.opt.step()
        except Exception as torch_error:  # noqa: BLE001 - compared with fusedopt's below
            try:
                self.a.opt.step()
            except Exception as ours:  # noqa: BLE001
                assert isinstance(ours, type(torch_error)) or isinstance(torch_error, type(ours)), (ours, torch_error)
            else:
                raise AssertionError(f"{self.name}: torch refused this step ({torch_error!r}); fusedopt stepped")
            # nothing written; a state the step made for a param (as torch's
            # steps make them before they fail) holds only zeros
            after = self.a.snapshot()
            assert before.keys() <= after.keys()
            for key, value in after.items():
                assert torch.equal(value, before[key]) if key in before else not value.any(), key
            self.refusals += 1
            # torch's refusals can come after some writes (a step count, a
            # weight decay): its side goes back to where it was
            self.b.restore(torch_before)
            return
        self.a.opt.step()
        self.steps += 1
        self.check()
        self.resync()

    def check(self):
        for x, y in zip(self.a.params, self.b.params):
            assert x.dtype == y.dtype and x.shape == y.shape
            torch.testing.assert_close(x.detach(), y.detach(), **fp32_tol())
            sa, sb = self.a.opt.state.get(x, {}), self.b.opt.state.get(y, {})
            assert set(sb) <= set(sa), (sa.keys(), sb.keys())
            for k, v in sb.items():
                mine = sa[k]
                if v.is_sparse:
                    v, mine = v.to_dense(), mine.to_dense()
                torch.testing.assert_close(mine, v, **fp32_tol())

    def resync(self):
        """torch's side takes fusedopt's values (same objects, same storage)."""
        with torch.no_grad():
            for x, y in zip(self.a.params, self.b.params):
                y.copy_(x)
                sa, sb = self.a.opt.state.get(x, {}), self.b.opt.state.get(y, {})
                for k, v in sb.items():
                    if k in sa and not v.is_sparse and v.shape == sa[k].shape and v.dtype == sa[k].dtype:
                        v.copy_(sa[k])

    # -- edits -----------------------------------------------------------------------------------

    def both(self, edit, *args):
        """Applies `edit(side, *args)` to both sides."""
        edit(self.a, *args)
        edit(self.b, *args)


def _held(side, i):
    return side.params[i], side.opt.state.get(side.params[i], {})


# Each edit takes a side and an index into its params, and changes that side
# as a script would; the same call is made on the other side.

def param_storage_cloned(side, i):
    p, _ = _held(side, i)
    p.data = p.data.clone()


def param_restrided(side, i):
    p, _ = _held(side, i)
    if p.dim() == 2:  # same values and storage size, transposed strides
        p.data = p.data.t().contiguous().t()


def state_storage_cloned(side, i):
    _, st = _held(side, i)
    for k in st:
        if k != "step":
            st[k].data = st[k].data.clone()


def state_replaced(side, i):
    _, st = _held(side, i)
    for k in list(st):
        st[k] = st[k].clone()


def state_popped(side, i):
    side.opt.state.pop(side.params[i], None)


def state_cleared(side, i):
    side.opt.state.clear()


def state_dict_reloaded(side, i):
    side.opt.load_state_dict(side.opt.state_dict())


def group_dicts_replaced(side, i):
    side.opt.param_groups[:] = [dict(g) for g in side.opt.param_groups]


def group_params_reversed(side, i):
    g = side.opt.param_groups[i % len(side.opt.param_groups)]
    g["params"] = g["params"][::-1]


def group_lr_changed(side, i):
    g = side.opt.param_groups[i % len(side.opt.param_groups)]
    g["lr"] = g["lr"] * 0.9


def group_deleted_and_readded(side, i):
    """The last group goes (its states with it) and comes back as a new dict."""
    g = side.opt.param_groups.pop()
    for p in g["params"]:
        side.opt.state.pop(p, None)
    side.opt.add_param_group({k: v for k, v in g.items()})


def param_added(side, i):
    if len(side.params) >= 12:  # (long runs stay small)
        return
    gen = torch.Generator().manual_seed(100 + len(side.params))
    p = torch.nn.Parameter(torch.randn(4, generator=gen))
    side.params.append(p)
    side.opt.add_param_group({"params": [p]})


STORAGE = [param_storage_cloned, param_restrided, state_storage_cloned]
STATE = [state_replaced, state_popped, state_cleared, state_dict_reloaded]
GROUPS = [group_dicts_replaced, group_params_reversed, group_lr_changed, group_deleted_and_readded, param_added]
EDITS = STORAGE + STATE + GROUPS


def transposed_grad(p, gen):
    g = torch.randn(p.shape[::-1], generator=gen)
    return g.t() if p.dim() == 2 else torch.randn(p.shape, generator=gen)


def float64_grad(p, gen):
    return torch.randn(p.shape, generator=gen, dtype=torch.float64)


def sparse_grad(p, gen):
    g = torch.randn(p.shape, generator=gen)
    return g.to_sparse() if p.dim() == 2 else g


GRADS = {"transposed": transposed_grad, "float64": float64_grad, "sparse (SGD)": sparse_grad}


def run(twin: Twin, steps: int, edits, seed: int = 0, grad_kinds=(), none_every: int = 0) -> Twin:
    """`steps` steps of `twin`, each after one random edit from `edits` (or
    none) and grads of a random kind from `grad_kinds` (or plain ones)."""
    rnd = random.Random(seed)
    for k in range(steps):
        edit = rnd.choice(list(edits) + [None])
        if edit is not None:
            twin.both(edit, rnd.randrange(len(twin.a.params)))
        kind = rnd.choice(list(grad_kinds) + [None]) if grad_kinds else None
        if kind == "sparse (SGD)" and not twin.sgd:
            kind = None
        none = {rnd.randrange(len(twin.a.params))} if none_every and k % none_every == 0 else ()
        twin.grads(none=none, make=GRADS[kind] if kind else None)
        twin.step()
    return twin
