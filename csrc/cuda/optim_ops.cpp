// fusedopt::adam_ and fusedopt::sgd_ on CUDA: validate (the same checks as the
// CPU), gather pointers, launch on torch's current stream. Nothing here reads a
// device value: lr, scale, found_inf and the norm are read by the kernels.
#include "../op_args.h"
#include "calls.h"
#include "device.h"
#include "launch.h"
#include "ops.h"

namespace fusedopt {
namespace cuda {
namespace {

template <class T>
T* const* data_or_null(const std::vector<T*>& v) {
  return v.empty() ? nullptr : v.data();
}

}  // namespace

TensorLists LaunchPointers::view(const std::vector<int64_t>& numels) const {
  TensorLists t;
  t.n = static_cast<int>(numels.size());
  t.numel = numels.data();
  t.param = data_or_null(param);
  t.grad = grad.empty() ? nullptr : grad.data();
  t.state0 = data_or_null(state0);
  t.state1 = data_or_null(state1);
  t.state2 = data_or_null(state2);
  t.master = master.empty() ? nullptr : reinterpret_cast<float* const*>(master.data());
  t.scalar = data_or_null(scalar);
  return t;
}

LaunchPointers adam_pointers(const CallInfo& d, const AdamLists& l, bool amsgrad) {
  LaunchPointers p;
  p.param = mutable_ptrs(l.params);
  p.grad = const_ptrs(l.grads);
  p.state0 = mutable_ptrs(l.exp_avgs);
  p.state1 = mutable_ptrs(l.exp_avg_sqs);
  if (amsgrad) p.state2 = mutable_ptrs(l.max_exp_avg_sqs);
  if (d.master) p.master = mutable_ptrs(l.masters);
  p.scalar = mutable_ptrs(l.steps);
  return p;
}

LaunchPointers sgd_pointers(const CallInfo& d, const SgdLists& l, bool has_momentum) {
  LaunchPointers p;
  p.param = mutable_ptrs(l.params);
  p.grad = const_ptrs(l.grads);
  if (has_momentum) {
    p.state0 = mutable_ptrs(l.momentum_buffers);
    p.scalar = mutable_ptrs(l.momentum_first);
  }
  if (d.master) p.master = mutable_ptrs(l.masters);
  return p;
}

StepControl control_of(const StepScalars& s) {
  StepControl c;
  c.lr = s.lr;
  if (s.lr_tensor.has_value()) {
    c.lr_ptr = s.lr_tensor->const_data_ptr();
    c.lr_is_double = s.lr_tensor->scalar_type() == ScalarType::Double;
  }
  c.grad_scale = optional_ptr(s.grad_scale);
  c.found_inf = optional_ptr(s.found_inf);
  c.sumsq = optional_ptr(s.sumsq);
  c.max_norm = s.max_norm;
  c.max_value = s.max_value;
  c.maximize = s.maximize;
  return c;
}

void run_adam(const LaunchPointers& ptrs, const CallInfo& d, bool amsgrad, const math::AdamHyper& hyper,
              const StepControl& ctl, const char* op) {
  torch::stable::accelerator::DeviceGuard guard(d.place.index);
  AdamLaunch a;
  a.t = ptrs.view(d.numels);
  a.param_dtype = d.param;
  a.grad_dtype = d.grad;
  a.state_dtype = d.state;
  a.amsgrad = amsgrad;
  a.master = d.master;
  a.hyper = hyper;
  a.ctl = ctl;
  check_launch(launch_adam(a, current_stream(d.place.index)), op);
}

void run_sgd(const LaunchPointers& ptrs, const CallInfo& d, const SgdHyper& hyper, const StepControl& ctl,
             const char* op) {
  torch::stable::accelerator::DeviceGuard guard(d.place.index);
  SgdLaunch a;
  a.t = ptrs.view(d.numels);
  a.param_dtype = d.param;
  a.grad_dtype = d.grad;
  a.state_dtype = d.state;
  a.has_momentum = hyper.momentum != 0.0;
  a.master = d.master;
  a.momentum = hyper.momentum;
  a.dampening = hyper.dampening;
  a.weight_decay = hyper.weight_decay;
  a.nesterov = hyper.nesterov;
  a.ctl = ctl;
  check_launch(launch_sgd(a, current_stream(d.place.index)), op);
}

void adam_(
    StableListHandle params_arg,
    StableListHandle grads_arg,
    StableListHandle exp_avgs_arg,
    StableListHandle exp_avg_sqs_arg,
    StableListHandle max_exp_avg_sqs_arg,
    StableListHandle steps_arg,
    StableListHandle master_params_arg,
    double lr,
    std::optional<Tensor> lr_tensor,
    double beta1,
    double beta2,
    double eps,
    double weight_decay,
    bool decoupled,
    bool amsgrad,
    bool maximize,
    std::optional<Tensor> grad_scale,
    std::optional<Tensor> found_inf,
    std::optional<Tensor> sumsq,
    double max_norm,
    double max_value) {
  const TensorList params{params_arg}, grads{grads_arg}, exp_avgs{exp_avgs_arg}, exp_avg_sqs{exp_avg_sqs_arg},
      max_exp_avg_sqs{max_exp_avg_sqs_arg}, steps{steps_arg}, master_params{master_params_arg};
  if (params.empty()) return;
  const AdamLists l{params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params};
  const CallInfo d = check_adam_args(l, amsgrad, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/true);
  // on the tensors' device before any mutable pointer is taken (that may copy a
  // copy-on-write tensor, allocating on the current device)
  torch::stable::accelerator::DeviceGuard guard(d.place.index);
  const LaunchPointers ptrs = adam_pointers(d, l, amsgrad);
  run_adam(ptrs, d, amsgrad, math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled},
           control_of(StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize}),
           "adam_");
}

void sgd_(
    StableListHandle params_arg,
    StableListHandle grads_arg,
    StableListHandle momentum_buffers_arg,
    StableListHandle momentum_first_arg,
    StableListHandle master_params_arg,
    double lr,
    std::optional<Tensor> lr_tensor,
    double momentum,
    double dampening,
    double weight_decay,
    bool nesterov,
    bool maximize,
    std::optional<Tensor> grad_scale,
    std::optional<Tensor> found_inf,
    std::optional<Tensor> sumsq,
    double max_norm,
    double max_value) {
  const TensorList params{params_arg}, grads{grads_arg}, momentum_buffers{momentum_buffers_arg},
      momentum_first{momentum_first_arg}, master_params{master_params_arg};
  if (params.empty()) return;
  const bool has_momentum = momentum != 0.0;
  const SgdLists l{params, grads, momentum_buffers, momentum_first, master_params};
  const CallInfo d = check_sgd_args(l, has_momentum, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/true);
  torch::stable::accelerator::DeviceGuard guard(d.place.index);  // as in adam_
  const LaunchPointers ptrs = sgd_pointers(d, l, has_momentum);
  run_sgd(ptrs, d, SgdHyper{momentum, dampening, weight_decay, nesterov},
          control_of(StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize}),
          "sgd_");
}

}  // namespace cuda
}  // namespace fusedopt
