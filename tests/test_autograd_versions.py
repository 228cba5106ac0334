"""Every tensor a step writes gets its autograd version counter bumped, as an
in-place torch op would: a graph that saved a param before the step must
refuse to back-propagate after it, exactly as with torch.optim."""

import pytest
import torch

import fusedopt

STALE = "modified by an inplace operation"


def _stale_backward(make_opt, grad_dtype=None, dtype=torch.float32):
    """A loss that saved w, then a step, then backward through the stale graph."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, dtype=dtype))
    opt = make_opt([w])
    loss = (w * w).sum()  # mul saves w for its backward
    w.grad = torch.randn(6, dtype=dtype)
    opt.step()
    loss.backward()


OPTIMIZERS = {
    "Adam": (torch.optim.Adam, fusedopt.Adam, dict(lr=0.1)),
    "AdamW": (torch.optim.AdamW, fusedopt.AdamW, dict(lr=0.1)),
    "AdamW clip": (torch.optim.AdamW, fusedopt.AdamW, dict(lr=0.1)),
    "SGD": (torch.optim.SGD, fusedopt.SGD, dict(lr=0.1)),
    "SGD momentum": (torch.optim.SGD, fusedopt.SGD, dict(lr=0.1, momentum=0.9)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_backward_through_a_stale_graph_raises_as_with_torch(name, dtype):
    torch_cls, cls, kw = OPTIMIZERS[name]
    extra = dict(max_grad_norm=1.0) if "clip" in name else {}
    with pytest.raises(RuntimeError, match=STALE):
        _stale_backward(lambda p: torch_cls(p, **kw), dtype=dtype)
    with pytest.raises(RuntimeError, match=STALE):
        _stale_backward(lambda p: cls(p, **kw, **extra), dtype=dtype)


@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.AdamW, fusedopt.SGD])
def test_every_written_state_tensor_is_bumped(cls):
    w = torch.nn.Parameter(torch.randn(5))
    kw = dict(momentum=0.9) if cls is fusedopt.SGD else dict(amsgrad=True)
    opt = cls([w], lr=0.1, **kw)
    w.grad = torch.randn(5)
    opt.step()
    before = {k: v._version for k, v in opt.state[w].items()}
    pv = w._version
    opt.step()
    assert w._version > pv
    for key, version in before.items():
        assert opt.state[w][key]._version > version, key


def test_skipped_params_are_not_bumped():
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    opt = fusedopt.AdamW([a, b], lr=0.1)
    a.grad = torch.randn(5)
    vb = b._version
    opt.step()
    assert b._version == vb


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (fusedopt.clip_grad_norm_, torch.nn.utils.clip_grad_norm_),
        (fusedopt.clip_grad_value_, torch.nn.utils.clip_grad_value_),
    ],
    ids=["clip_grad_norm_", "clip_grad_value_"],
)
def test_clipping_bumps_the_grads_it_writes(ours, theirs):
    w = torch.nn.Parameter(torch.randn(8))
    w.grad = torch.randn(8) * 10
    version = w.grad._version
    theirs([w], 0.1)
    assert w.grad._version > version  # torch bumps
    version = w.grad._version
    ours([w], 0.1)
    assert w.grad._version > version


def test_unscale_bumps_the_grads():
    w = torch.nn.Parameter(torch.randn(8))
    opt = fusedopt.AdamW([w], lr=0.1)
    scaler = fusedopt.GradScaler("cpu", init_scale=4.0)
    scaler.scale((w * w).sum()).backward()
    version = w.grad._version
    scaler.unscale_(opt)
    assert w.grad._version > version


def test_the_step_compiles_with_the_version_bump():
    w = torch.nn.Parameter(torch.randn(16))
    ref = torch.nn.Parameter(w.detach().clone())
    opt, ref_opt = fusedopt.AdamW([w], lr=0.1), fusedopt.AdamW([ref], lr=0.1)
    g = torch.randn(16)
    w.grad, ref.grad = g.clone(), g.clone()

    @torch.compile(backend="eager")
    def step():
        opt.step()

    for _ in range(2):
        step()
        ref_opt.step()
    torch.testing.assert_close(w.detach(), ref.detach(), rtol=0, atol=0)
