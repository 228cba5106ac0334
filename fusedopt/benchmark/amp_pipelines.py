"""The AMP + clip-by-global-norm + AdamW step as users write it.

  torch idiom     scaler.unscale_(opt); clip_grad_norm_(params, 1.0);
                  scaler.step(opt); scaler.update()
                  with torch.amp.GradScaler and any AdamW (torch's fused or
                  foreach, or another library's)
  fused loop      fusedopt.AdamW(max_grad_norm=1.0) + fusedopt.GradScaler:
                  scaler.step(opt); scaler.update()   (two passes over grads)
  fusedopt idiom  torch's idiom with fusedopt's classes and clip_grad_norm_

The backward pass is not part of it: the grads are made once, as a backward
pass under a loss scale of 2^16 would leave them, and put back (untimed) before
every repetition: unscale_ and clip_grad_norm_ rewrite them in place, and a
repetition that started from the last one's grads would find them already
unscaled and clipped, which lets an implementation that skips a multiply by
exactly 1 skip its stores too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import fusedopt

from .implementations import LR, WEIGHT_DECAY

# GradScaler's default initial scale. The scale stays there (no growth during a
# run), so that every repetition does the same work: the unscale factor is
# 2^-16 and the grads, N(0, 1) once unscaled, have a norm of about
# sqrt(numel) >> MAX_NORM, so the clip coefficient is well below 1 every time.
SCALE = 65536.0
MAX_NORM = 1.0
_NO_GROWTH = 2**31 - 1
_SCALER_KW = dict(init_scale=SCALE, growth_interval=_NO_GROWTH)


class Pipeline:
    def __init__(self, params, opt, scaler, step: Callable[["Pipeline"], None]):
        self.params, self.opt, self.scaler, self._step = params, opt, scaler, step
        self.grads = [p.grad for p in params]
        self.saved = [g.mul(SCALE) for g in self.grads]
        # a scaler creates its scale tensor on its first scale(); the backward
        # pass that would call it is not part of what is timed
        scaler.scale(torch.zeros((), device=params[0].device))
        self.reset()

    def reset(self):
        """The scaled grads again, in the same tensors (the optimizers' plans
        hold them); call before every repetition, outside the timed region."""
        torch._foreach_copy_(self.grads, self.saved)

    def __call__(self):
        self._step(self)


def _torch_step(pl):
    pl.scaler.unscale_(pl.opt)
    torch.nn.utils.clip_grad_norm_(pl.params, MAX_NORM)
    pl.scaler.step(pl.opt)
    pl.scaler.update()


def _fused_step(pl):
    pl.scaler.step(pl.opt)
    pl.scaler.update()


def _fusedopt_idiom_step(pl):
    pl.scaler.unscale_(pl.opt)
    fusedopt.clip_grad_norm_(pl.params, MAX_NORM)
    pl.scaler.step(pl.opt)
    pl.scaler.update()


def torch_idiom(params, opt: torch.optim.Optimizer, device: str) -> Pipeline:
    return Pipeline(params, opt, torch.amp.GradScaler(device.split(":")[0], **_SCALER_KW), _torch_step)


def fused_loop(params, device: str) -> Pipeline:
    opt = fusedopt.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_NORM)
    return Pipeline(params, opt, fusedopt.GradScaler(device.split(":")[0], **_SCALER_KW), _fused_step)


def fusedopt_idiom(params, device: str) -> Pipeline:
    opt = fusedopt.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    return Pipeline(params, opt, fusedopt.GradScaler(device.split(":")[0], **_SCALER_KW), _fusedopt_idiom_step)
