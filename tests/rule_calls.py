"""Calls of the rules' list ops (one schema for every rule: csrc/ops.cpp) with
each rule's arguments spelt out, for the tests that drive the ops directly."""

from __future__ import annotations


def adam(op, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params, lr, lr_tensor, beta1,
         beta2, eps, weight_decay, decoupled, amsgrad, maximize, grad_scale, found_inf, sumsq, max_norm,
         max_value=0.0, hyper_tensor=None):
    """``op`` (torch.ops.fusedopt.adam_, or another library's) with Adam's lists and hyperparameters."""
    op(params, grads, [*exp_avgs, *exp_avg_sqs, *max_exp_avg_sqs], steps, master_params,
       [beta1, beta2, eps, weight_decay, float(decoupled), float(amsgrad)], hyper_tensor, lr, lr_tensor,
       grad_scale, found_inf, sumsq, max_norm, max_value, maximize)


def sgd(op, params, grads, momentum_buffers, momentum_first, master_params, lr, lr_tensor, momentum, dampening,
        weight_decay, nesterov, maximize, grad_scale, found_inf, sumsq, max_norm, max_value=0.0, hyper_tensor=None):
    """``op`` (torch.ops.fusedopt.sgd_, ...) with SGD's lists and hyperparameters."""
    op(params, grads, list(momentum_buffers), momentum_first, master_params,
       [momentum, dampening, weight_decay, float(nesterov)], hyper_tensor, lr, lr_tensor, grad_scale, found_inf,
       sumsq, max_norm, max_value, maximize)


def adam_sample_to_args(sample) -> tuple:
    """adam_'s old positional sample as the rule schema's positional arguments."""
    (params, grads, m, v, vmax, steps, masters, lr, lr_tensor, b1, b2, eps, wd, decoupled, amsgrad, maximize,
     grad_scale, found_inf, sumsq, max_norm, *rest) = sample
    return (params, grads, [*m, *v, *vmax], steps, masters, [b1, b2, eps, wd, float(decoupled), float(amsgrad)],
            None, lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, *(rest or [0.0]), maximize)


def sgd_sample_to_args(sample) -> tuple:
    """sgd_'s old positional sample as the rule schema's positional arguments."""
    (params, grads, bufs, first, masters, lr, lr_tensor, momentum, dampening, wd, nesterov, maximize, grad_scale,
     found_inf, sumsq, max_norm, *rest) = sample
    return (params, grads, list(bufs), first, masters, [momentum, dampening, wd, float(nesterov)], None, lr,
            lr_tensor, grad_scale, found_inf, sumsq, max_norm, *(rest or [0.0]), maximize)


ADAM_HYPER = [0.9, 0.999, 1e-8, 0.0, 1.0, 0.0]  # AdamW, no weight decay, no amsgrad
# plan_step_'s arguments after the anchor and the plan: hyper, hyper_tensor, lr, lr_tensor, grad_scale,
# found_inf, sumsq, max_norm, max_value, maximize
ADAM_PLAN_STEP = (ADAM_HYPER, None, 1e-3, None, None, None, None, 0.0, 0.0, False)


def adam_plan(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params=(), hyper=ADAM_HYPER):
    """A native Adam native plan (fusedopt/_native_plan.py) of these lists, these grads bound."""
    from fusedopt import _native_plan

    return _native_plan.make("adam", params, grads, [*exp_avgs, *exp_avg_sqs, *max_exp_avg_sqs], steps,
                             list(master_params), hyper)
