"""Two CUDA graphs of clipped steps, replayed alternately and concurrently on
two streams, against the same steps run eagerly.

torch.cuda.graph captures every graph on one shared capture stream. The global
norm's pass keeps partial sums and a block counter in a workspace; when that
workspace was cached per (device, stream), both graphs captured the same one
and concurrent replays raced on it. It is now allocated per call, from each
graph's private memory pool under capture."""

import pytest
import torch

import fusedopt
from conftest import requires_cuda_kernels
from cuda_common import DEV, cpu_values

# the kernels' workspace is what is under test (the reference path's own
# capturability is another matter)
pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend"), requires_cuda_kernels]

# enough blocks (64 KiB of grads each) for the two graphs' stats passes to overlap
SIZES = ((1 << 22) + 3, 65537, 1000)


class Graphed:
    """An optimizer stepping static grads, its step captured once, and an eager
    twin on copies of the same params stepping the same grads."""

    def __init__(self, make_opt, seed):
        base = [cpu_values(n, seed + k) for k, n in enumerate(SIZES)]
        self.params = [torch.nn.Parameter(x.to(DEV)) for x in base]
        self.eager = [torch.nn.Parameter(x.to(DEV)) for x in base]
        self.opt, self.eager_opt = make_opt(self.params), make_opt(self.eager)
        self.static = [torch.zeros_like(p) for p in self.params]
        for p, g in zip(self.params, self.static):
            p.grad = g
        self.seed = seed

    def grads(self, step):
        return [cpu_values(n, 1000 * self.seed + 10 * step + k, scale=3.0).to(DEV) for k, n in enumerate(SIZES)]

    def load(self, step):
        """This step's grads: into the static ones (current stream) and the eager twin's."""
        for s, g, p in zip(self.static, self.grads(step), self.eager):
            s.copy_(g)
            p.grad = g

    def warm_up(self):
        # state is created outside the graph, on a side stream as torch's docs ask
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.load(0)
            self.opt.step()
        torch.cuda.current_stream().wait_stream(side)
        self.eager_opt.step()

    def capture(self):
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.opt.step()

    def assert_matches_eager(self, steps):
        torch.cuda.synchronize()
        for a, b in zip(self.params, self.eager):
            assert torch.equal(a.detach(), b.detach())
        torch.testing.assert_close(self.opt.last_grad_norm, self.eager_opt.last_grad_norm, rtol=0, atol=0)
        if isinstance(self.opt, fusedopt.AdamW):
            assert all(float(self.opt.state[p]["step"]) == steps for p in self.params)


def _pair():
    lr = torch.tensor(0.01, device=DEV)
    adam = Graphed(lambda ps: fusedopt.AdamW(ps, lr=lr.clone(), weight_decay=0.1, max_grad_norm=1.0,
                                             capturable=True), seed=1)
    sgd = Graphed(lambda ps: fusedopt.SGD(ps, lr=0.05, momentum=0.9, max_grad_norm=1.0), seed=2)
    for g in (adam, sgd):
        g.warm_up()
    for g in (adam, sgd):
        g.capture()
    return adam, sgd


def test_two_graphs_replayed_alternately():
    pair = _pair()
    for step in range(1, 6):
        for g in pair:
            g.load(step)
            g.graph.replay()
            g.eager_opt.step()
    for g in pair:
        g.assert_matches_eager(6)


def test_two_graphs_replayed_concurrently_on_two_streams():
    pair = _pair()
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    main = torch.cuda.current_stream()
    for step in range(1, 9):
        for g in pair:
            g.load(step)
        # both replays in flight at once, each on its own stream
        for g, s in zip(pair, streams):
            s.wait_stream(main)
            with torch.cuda.stream(s):
                g.graph.replay()
        for s in streams:
            main.wait_stream(s)
        for g in pair:
            g.eager_opt.step()
    for g in pair:
        g.assert_matches_eager(9)
