"""The same tensor listed twice (tied weights gathered with
``chain(enc.parameters(), dec.parameters())``): torch warns and its default CPU
implementation (the for-loop) processes the duplicate twice, in order; fusedopt
does the same, deterministically, on every path that writes (the update,
clip_grad_norm_, clip_grad_value_, unscale_). (torch's foreach implementation,
the default on CUDA, applies each op to both occurrences before the next op,
which gives other numbers; fusedopt gives the for-loop's everywhere.)"""

import warnings
from itertools import chain

import pytest
import torch

import fusedopt
from helpers import fp32_tol

# large enough that the CPU kernels split one tensor across threads
N = 100_000


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn()


def _tied(n=N, seed=0):
    torch.manual_seed(seed)
    q = torch.nn.Parameter(torch.randn(n))
    other = torch.nn.Parameter(torch.randn(7))
    return q, other


@pytest.mark.parametrize(
    "torch_cls,cls,kw",
    [
        (torch.optim.AdamW, fusedopt.AdamW, dict(lr=0.1)),
        (torch.optim.Adam, fusedopt.Adam, dict(lr=0.1, amsgrad=True, weight_decay=0.1)),
        (torch.optim.SGD, fusedopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        (torch.optim.SGD, fusedopt.SGD, dict(lr=0.1)),
    ],
)
def test_duplicate_param_is_updated_twice_in_order_like_torch(torch_cls, cls, kw):
    q, other = _tied()
    r, rother = (torch.nn.Parameter(t.detach().clone()) for t in (q, other))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = cls([q, other, q], **kw)
    ref = _quiet(lambda: torch_cls([r, rother, r], **kw))
    for step in range(3):
        g = torch.randn(N)
        q.grad, r.grad = g.clone(), g.clone()
        other.grad = rother.grad = torch.randn(7)
        opt.step()
        ref.step()
    torch.testing.assert_close(q.detach(), r.detach(), **fp32_tol())
    torch.testing.assert_close(other.detach(), rother.detach(), **fp32_tol())
    if "step" in ref.state[r]:
        assert float(opt.state[q]["step"]) == float(ref.state[r]["step"]) == 6


def test_tied_weights_with_in_step_clipping_use_the_norm_of_the_distinct_grads():
    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(300, 300), torch.nn.Linear(300, 300)
    dec.weight = enc.weight
    renc, rdec = torch.nn.Linear(300, 300), torch.nn.Linear(300, 300)
    renc.load_state_dict(enc.state_dict())
    rdec.bias.data.copy_(dec.bias)
    rdec.weight = renc.weight
    opt = _quiet(lambda: fusedopt.AdamW(chain(enc.parameters(), dec.parameters()), lr=0.01, max_grad_norm=0.5))
    ref = _quiet(lambda: torch.optim.AdamW(chain(renc.parameters(), rdec.parameters()), lr=0.01))
    x = torch.randn(4, 300)
    for _ in range(2):
        for model in ((enc, dec), (renc, rdec)):
            for m in model:
                m.zero_grad()
            model[1](model[0](x)).square().sum().backward()
        opt.step()
        # torch's idiom: the norm of the model's (distinct) parameters
        torch.nn.utils.clip_grad_norm_(list(renc.parameters()) + [rdec.bias], 0.5)
        ref.step()
    for a, b in ((enc.weight, renc.weight), (enc.bias, renc.bias), (dec.bias, rdec.bias)):
        torch.testing.assert_close(a.detach(), b.detach(), **fp32_tol())


def test_clip_grad_norm_of_a_duplicate_matches_torch():
    q, _ = _tied()
    r = torch.nn.Parameter(q.detach().clone())
    g = torch.randn(N) * 3
    for _ in range(5):  # a race would differ from run to run
        q.grad, r.grad = g.clone(), g.clone()
        ours = fusedopt.clip_grad_norm_([q, q], 1.0)
        theirs = torch.nn.utils.clip_grad_norm_([r, r], 1.0)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
        torch.testing.assert_close(q.grad, r.grad, rtol=1e-5, atol=0)


def test_clip_grad_value_of_a_duplicate_matches_torch():
    q, _ = _tied()
    r = torch.nn.Parameter(q.detach().clone())
    q.grad = torch.randn(N)
    r.grad = q.grad.clone()
    fusedopt.clip_grad_value_([q, q], 0.5)
    torch.nn.utils.clip_grad_value_([r, r], 0.5)
    assert torch.equal(q.grad, r.grad)


@pytest.mark.parametrize("scaler_cls", [fusedopt.GradScaler, torch.amp.GradScaler])
def test_unscale_of_a_duplicate_matches_torch(scaler_cls):
    q, _ = _tied()
    r = torch.nn.Parameter(q.detach().clone())
    g = torch.randn(N)
    q.grad, r.grad = g.clone(), g.clone()
    opt = _quiet(lambda: fusedopt.AdamW([q, q], lr=0.1))
    ref = _quiet(lambda: torch.optim.AdamW([r, r], lr=0.1))
    for scaler, o in ((scaler_cls("cpu", init_scale=8.0), opt), (torch.amp.GradScaler("cpu", init_scale=8.0), ref)):
        scaler.scale(torch.ones(()))  # makes the scale
        scaler.unscale_(o)
    torch.testing.assert_close(q.grad, r.grad, rtol=0, atol=0)
