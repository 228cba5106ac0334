"""_step_supports_amp_scaling: true for torch.amp.GradScaler (which then drives
fusedopt's step through the sync-free protocol), false for other readers such
as Lightning (which would otherwise refuse to clip), true for everyone with
fused=True and false with differentiable=True, as torch's flag is."""

import pytest
import torch

import fusedopt


def _spied(opt):
    """Records the grad_scale / found_inf each step ran with."""
    seen = []
    original = opt._fused_step

    def spy(grad_scale, found_inf, **kw):
        seen.append((grad_scale, found_inf))
        return original(grad_scale, found_inf, **kw)

    opt._fused_step = spy
    return seen


@pytest.mark.parametrize("explicit_unscale", [False, True])
def test_torch_grad_scaler_drives_the_step_through_the_amp_protocol(explicit_unscale):
    w = torch.nn.Parameter(torch.randn(8))
    opt = fusedopt.AdamW([w], lr=0.1)
    seen = _spied(opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    scaler.scale((w * torch.randn(8)).sum()).backward()
    if explicit_unscale:
        scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    (grad_scale, found_inf), = seen
    # found_inf arrives as a tensor: the step skips itself on the device, nothing read on the host
    assert isinstance(found_inf, torch.Tensor)
    if explicit_unscale:
        assert grad_scale is None  # grads already unscaled: never unscale twice
    else:
        assert float(grad_scale) == 16.0


def test_other_readers_see_an_ordinary_optimizer():
    opt = fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))])
    assert getattr(opt, "_step_supports_amp_scaling", False) is False
    assert getattr(torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))]), "_step_supports_amp_scaling", False) is False


def test_lightnings_check_lets_it_clip():
    amp = pytest.importorskip("lightning.fabric.plugins.precision.amp")
    assert not amp._optimizer_handles_unscaling(fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))]))
    assert amp._optimizer_handles_unscaling(fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))], fused=True))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_fused_and_differentiable_report_as_torch(name):
    for kw in (dict(fused=True), dict(differentiable=True), {}):
        ours = getattr(fusedopt, name)([torch.nn.Parameter(torch.randn(3))], **kw)
        theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.randn(3))], **kw)
        assert getattr(ours, "_step_supports_amp_scaling", False) == getattr(theirs, "_step_supports_amp_scaling", False)


def test_an_instance_attribute_overrides_it():
    opt = fusedopt.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.1)
    opt._step_supports_amp_scaling = True
    assert getattr(opt, "_step_supports_amp_scaling") is True
