"""``_step_supports_amp_scaling``: what fusedopt's optimizers tell AMP code.

torch.amp.GradScaler reads the attribute in ``step``: when it is true, it hands
the optimizer its scale and found_inf as tensors (``grad_scale``, ``found_inf``;
grad_scale None after an explicit ``unscale_``) and lets the step skip itself on
the device, so nothing syncs. Otherwise it checks found_inf on the host (a sync)
and calls the step only when it is zero. fusedopt's step handles both.

torch sets the attribute only for ``fused=True``, and other code reads it as
"this step unscales the grads itself, so nobody may clip them before it": PyTorch
Lightning then refuses ``gradient_clip_val`` (bf16-mixed included) and skips its
own ``scaler.unscale_``. For fusedopt that reading is wrong (its step takes
unscaled grads as well as scaled ones), so the flag is:

* ``fused=True``: true for every reader, exactly as torch's (Lightning refuses
  clipping with fused fusedopt optimizers as it does with torch's);
* ``differentiable=True``: false (torch's own implementation runs the step);
* otherwise: true for torch.amp.GradScaler, the reader whose protocol it names,
  and false for everyone else. torch's scaler stays sync-free with fusedopt, and
  Lightning, seeing an ordinary optimizer, unscales, clips, then calls the
  scaler's step, which takes the already-unscaled path, still without a sync.

A reader is told apart by the module of the calling frame. If a future torch
reads the flag elsewhere, its scaler gets False: it then syncs once per step,
which is slower but still correct. Assigning the attribute on an instance
overrides all of this.
"""

from __future__ import annotations

import sys

import torch

_TORCH_SCALER_MODULE = "torch.amp.grad_scaler"


class AmpScalingFlag:
    def __get__(self, opt, owner=None):
        if opt is None:
            return self
        defaults = opt.__dict__.get("defaults") or {}
        if defaults.get("differentiable"):
            return False
        if defaults.get("fused"):
            return True
        if torch.compiler.is_compiling():
            return False  # a frame cannot be inspected while tracing; False is right for every reader
        # frame 0 is this method; getattr() is C, so frame 1 is whoever asked
        return sys._getframe(1).f_globals.get("__name__") == _TORCH_SCALER_MODULE
