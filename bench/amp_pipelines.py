"""The AMP + clip-by-global-norm + AdamW step as users write it, four ways.

  torch-fused       scaler.unscale_(opt); clip_grad_norm_(params, 1.0);
                    scaler.step(opt); scaler.update()  with AdamW(fused=True)
  torch-foreach     the same with AdamW(foreach=True)
  fusedopt          fusedopt.AdamW(max_grad_norm=1.0) + fusedopt.GradScaler:
                    scaler.step(opt); scaler.update()   (two passes over grads)
  fusedopt-idiom    torch's idiom with fusedopt's classes and clip_grad_norm_

The backward pass is not part of it: the grads are made once.
"""

from __future__ import annotations

import torch

import fusedopt

from .workloads import Workload

class Pipeline:
    def __init__(self, name, params, opt, scaler, step):
        self.name, self.params, self.opt, self.scaler, self._step = name, params, opt, scaler, step
        # a scaler creates its scale tensor on its first scale(); the backward
        # pass that would call it is not part of what is timed
        scaler.scale(torch.zeros((), device=params[0].device))

    def __call__(self):
        self._step(self)


def _torch_step(pl):
    pl.scaler.unscale_(pl.opt)
    torch.nn.utils.clip_grad_norm_(pl.params, 1.0)
    pl.scaler.step(pl.opt)
    pl.scaler.update()


def _fused_step(pl):
    pl.scaler.step(pl.opt)
    pl.scaler.update()


def _fusedopt_idiom_step(pl):
    pl.scaler.unscale_(pl.opt)
    fusedopt.clip_grad_norm_(pl.params, 1.0)
    pl.scaler.step(pl.opt)
    pl.scaler.update()


def make(name: str, wl: Workload, device: str) -> Pipeline:
    params = wl.params(device=device)
    # scale 1: unscaling leaves the grads as they are, so every repetition does
    # the same work; the kernels move the same bytes whatever the scale is
    if name == "torch-fused":
        opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
        return Pipeline(name, params, opt, torch.amp.GradScaler(device, init_scale=1.0), _torch_step)
    if name == "torch-foreach":
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
        return Pipeline(name, params, opt, torch.amp.GradScaler(device, init_scale=1.0), _torch_step)
    if name == "fusedopt":
        opt = fusedopt.AdamW(params, lr=1e-4, max_grad_norm=1.0)
        return Pipeline(name, params, opt, fusedopt.GradScaler(device, init_scale=1.0), _fused_step)
    if name == "fusedopt-idiom":
        opt = fusedopt.AdamW(params, lr=1e-4)
        return Pipeline(name, params, opt, fusedopt.GradScaler(device, init_scale=1.0), _fusedopt_idiom_step)
    raise ValueError(name)


PIPELINES = ("torch-fused", "torch-foreach", "fusedopt", "fusedopt-idiom")


