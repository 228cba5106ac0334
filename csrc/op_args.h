// Validation of the optimizer ops' argument lists, shared by the CPU and CUDA
// entry points so both refuse exactly the same calls with the same messages.
#pragma once

#include "tensor_checks.h"

namespace fusedopt {

// The dtypes one call runs with (the Python side buckets tensors this way).
struct ListDTypes {
  cpu::DType param;
  cpu::DType grad;
  cpu::DType state;  // cpu::DType::F32 when there is no state list
  bool master;       // fp32 master weights are present
};

inline void check_common(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& masters,
    bool cuda) {
  FO_CHECK(!params.empty(), "params is empty");
  check_device_type(params, cuda, "params");
  check_length(grads, params.size(), "grads");
  for (size_t i = 0; i < params.size(); ++i) {
    check_param(params[i], i);
    FO_CHECK(same_device(params[i], params[0]), "params[", i, "] is on another device than params[0]");
    check_companion(params[i], grads[i], "grads", i);
  }
  if (!masters.empty()) {
    check_length(masters, params.size(), "master_params");
    for (size_t i = 0; i < params.size(); ++i) {
      check_companion(params[i], masters[i], "master_params", i);
      FO_CHECK(masters[i].scalar_type() == ScalarType::Float, "master_params[", i, "] must be float32");
    }
  }
}

inline void check_state_list(const TensorList& params, const TensorList& states, const char* what) {
  check_length(states, params.size(), what);
  for (size_t i = 0; i < params.size(); ++i) check_companion(params[i], states[i], what, i);
}

inline void check_amp_args(
    const Tensor& device_of,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq) {
  check_lr_tensor(lr_tensor, device_of);
  check_scalar_tensor(grad_scale, device_of, "grad_scale");
  check_scalar_tensor(found_inf, device_of, "found_inf");
  check_scalar_tensor(sumsq, device_of, "sumsq");
}

inline ListDTypes check_adam_args(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& exp_avgs,
    const TensorList& exp_avg_sqs,
    const TensorList& max_exp_avg_sqs,
    const TensorList& steps,
    const TensorList& masters,
    bool amsgrad,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    bool cuda) {
  check_common(params, grads, masters, cuda);
  check_state_list(params, exp_avgs, "exp_avgs");
  check_state_list(params, exp_avg_sqs, "exp_avg_sqs");
  if (amsgrad) {
    check_state_list(params, max_exp_avg_sqs, "max_exp_avg_sqs");
  } else {
    FO_CHECK(max_exp_avg_sqs.empty(), "max_exp_avg_sqs must be empty when amsgrad is false");
  }
  check_steps(steps, params);
  check_amp_args(params[0], lr_tensor, grad_scale, found_inf, sumsq);

  ListDTypes d;
  d.param = list_dtype(params, "params");
  d.grad = list_dtype(grads, "grads");
  d.state = list_dtype(exp_avgs, "exp_avgs");
  FO_CHECK(list_dtype(exp_avg_sqs, "exp_avg_sqs") == d.state, "exp_avg_sqs and exp_avgs differ in dtype");
  if (amsgrad) {
    FO_CHECK(list_dtype(max_exp_avg_sqs, "max_exp_avg_sqs") == d.state,
             "max_exp_avg_sqs and exp_avgs differ in dtype");
  }
  d.master = !masters.empty();
  return d;
}

inline ListDTypes check_sgd_args(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& momentum_buffers,
    const TensorList& momentum_first,
    const TensorList& masters,
    bool has_momentum,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    bool cuda) {
  check_common(params, grads, masters, cuda);
  ListDTypes d;
  d.param = list_dtype(params, "params");
  d.grad = list_dtype(grads, "grads");
  d.state = cpu::DType::F32;
  if (has_momentum) {
    check_state_list(params, momentum_buffers, "momentum_buffers");
    d.state = list_dtype(momentum_buffers, "momentum_buffers");
    check_length(momentum_first, params.size(), "momentum_first");
    for (size_t i = 0; i < params.size(); ++i) {
      FO_CHECK(momentum_first[i].numel() == 1 && momentum_first[i].scalar_type() == ScalarType::Bool,
               "momentum_first[", i, "] must be a one-element bool tensor");
      FO_CHECK(same_device(momentum_first[i], params[i]), "momentum_first[", i,
               "] is on another device than params[", i, "]");
    }
  } else {
    FO_CHECK(momentum_buffers.empty() && momentum_first.empty(),
             "momentum_buffers and momentum_first must be empty when momentum is 0");
  }
  check_amp_args(params[0], lr_tensor, grad_scale, found_inf, sumsq);
  d.master = !masters.empty();
  return d;
}

}  // namespace fusedopt
