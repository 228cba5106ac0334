// fusedopt::adam_ and fusedopt::sgd_ on CUDA: validate (the same checks as the
// CPU), gather pointers, launch on torch's current stream. Nothing here reads a
// device value: lr, scale, found_inf and the norm are read by the kernels.
#include "../op_args.h"
#include "device.h"
#include "launch.h"
#include "ops.h"

namespace fusedopt {
namespace cuda {
namespace {

StepControl control_of(
    double lr,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    double max_norm,
    double max_value,
    bool maximize) {
  StepControl c;
  c.lr = lr;
  if (lr_tensor.has_value()) {
    c.lr_ptr = lr_tensor->const_data_ptr();
    c.lr_is_double = lr_tensor->scalar_type() == ScalarType::Double;
  }
  c.grad_scale = optional_ptr(grad_scale);
  c.found_inf = optional_ptr(found_inf);
  c.sumsq = optional_ptr(sumsq);
  c.max_norm = max_norm;
  c.max_value = max_value;
  c.maximize = maximize;
  return c;
}

}  // namespace

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
  const CallInfo d = check_adam_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, master_params,
                                     amsgrad, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/true);
  torch::stable::accelerator::DeviceGuard guard(d.place.index);

  const std::vector<void*> p = mutable_ptrs(params), m = mutable_ptrs(exp_avgs), v = mutable_ptrs(exp_avg_sqs);
  const std::vector<void*> vm = mutable_ptrs(max_exp_avg_sqs), w = mutable_ptrs(master_params);
  const std::vector<void*> s = mutable_ptrs(steps);
  const std::vector<const void*> g = const_ptrs(grads);

  AdamLaunch a;
  a.t.n = static_cast<int>(params.size());
  a.t.numel = d.numels.data();
  a.t.param = p.data();
  a.t.grad = g.data();
  a.t.state0 = m.data();
  a.t.state1 = v.data();
  a.t.state2 = amsgrad ? vm.data() : nullptr;
  a.t.master = d.master ? reinterpret_cast<float* const*>(w.data()) : nullptr;
  a.t.scalar = s.data();
  a.param_dtype = d.param;
  a.grad_dtype = d.grad;
  a.state_dtype = d.state;
  a.amsgrad = amsgrad;
  a.master = d.master;
  a.hyper = math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled};
  a.ctl = control_of(lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize);
  check_launch(launch_adam(a, current_stream(d.place.index)), "adam_");
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
  const CallInfo d = check_sgd_args(params, grads, momentum_buffers, momentum_first, master_params, has_momentum,
                                    lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/true);
  torch::stable::accelerator::DeviceGuard guard(d.place.index);

  const std::vector<void*> p = mutable_ptrs(params), b = mutable_ptrs(momentum_buffers);
  const std::vector<void*> w = mutable_ptrs(master_params), first = mutable_ptrs(momentum_first);
  const std::vector<const void*> g = const_ptrs(grads);

  SgdLaunch a;
  a.t.n = static_cast<int>(params.size());
  a.t.numel = d.numels.data();
  a.t.param = p.data();
  a.t.grad = g.data();
  a.t.state0 = has_momentum ? b.data() : nullptr;
  a.t.master = d.master ? reinterpret_cast<float* const*>(w.data()) : nullptr;
  a.t.scalar = has_momentum ? first.data() : nullptr;
  a.param_dtype = d.param;
  a.grad_dtype = d.grad;
  a.state_dtype = d.state;
  a.has_momentum = has_momentum;
  a.master = d.master;
  a.momentum = momentum;
  a.dampening = dampening;
  a.weight_decay = weight_decay;
  a.nesterov = nesterov;
  a.ctl = control_of(lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize);
  check_launch(launch_sgd(a, current_stream(d.place.index)), "sgd_");
}

}  // namespace cuda
}  // namespace fusedopt
