// Validation of the optimizer ops' argument lists, shared by the CPU and CUDA
// entry points so both refuse exactly the same calls with the same messages.
#pragma once

#include "tensor_checks.h"

namespace fusedopt {

// What a validated call runs with (the Python side buckets tensors this way).
struct CallInfo {
  Place place;
  std::vector<int64_t> numels;
  DType param;
  DType grad;
  DType state;  // F32 when there is no state list
  bool master;       // fp32 master weights are present
  Layout layout;     // the params' memory layout, which every list shares
};

// The step's scalars as an update op (list op or plan) received them.
struct StepScalars {
  double lr;
  const std::optional<Tensor>& lr_tensor;
  const std::optional<Tensor>& grad_scale;
  const std::optional<Tensor>& found_inf;
  const std::optional<Tensor>& sumsq;
  double max_norm;
  double max_value;
  bool maximize;
};

struct SgdHyper {
  double momentum;
  double dampening;
  double weight_decay;
  bool nesterov;
};

// The one-element tensors a step reads (each may be absent), where the call runs.
inline void check_step_scalars(
    const Place& at,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq) {
  check_lr_tensor(lr_tensor, at);
  check_optional_scalar(grad_scale, at, "grad_scale");
  check_optional_scalar(found_inf, at, "found_inf");
  check_optional_scalar(sumsq, at, "sumsq");
}

inline CallInfo check_common(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& masters,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    bool cuda) {
  FO_CHECK(!params.empty(), "params is empty");
  CallInfo c;
  c.place = place_of(params[0]);
  FO_CHECK(c.place.cuda == cuda, "params[0] is not a ", cuda ? "CUDA" : "CPU", " tensor");
  c.numels.reserve(params.size());
  for (TensorRef p : params) c.numels.push_back(p.numel());
  c.param = check_list(params, c.numels, c.place, "params", nullptr, &c.layout);
  c.grad = check_list(grads, c.numels, c.place, "grads", &c.layout);
  FO_CHECK(c.grad == c.param || c.grad == DType::F32, "grads of ", dtype_name(c.param),
           " params must be ", dtype_name(c.param), " or float32, got ", dtype_name(c.grad));
  c.master = !masters.empty();
  if (c.master) {
    FO_CHECK(check_list(masters, c.numels, c.place, "master_params", &c.layout) == DType::F32,
             "master_params must be float32");
    FO_CHECK(c.param != DType::F32, "master_params are for float16/bfloat16 params only");
  }
  c.state = DType::F32;
  check_step_scalars(c.place, lr_tensor, grad_scale, found_inf, sumsq);
  return c;
}

// The lists of one adam_ call, in its schema's order (a list op's arguments,
// or a plan's held lists with a step's grads).
struct AdamLists {
  const TensorList& params;
  const TensorList& grads;
  const TensorList& exp_avgs;
  const TensorList& exp_avg_sqs;
  const TensorList& max_exp_avg_sqs;
  const TensorList& steps;
  const TensorList& masters;
};

// The lists of one sgd_ call, likewise.
struct SgdLists {
  const TensorList& params;
  const TensorList& grads;
  const TensorList& momentum_buffers;
  const TensorList& momentum_first;
  const TensorList& masters;
};

inline CallInfo check_adam_args(
    const AdamLists& l,
    bool amsgrad,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    bool cuda) {
  CallInfo c = check_common(l.params, l.grads, l.masters, lr_tensor, grad_scale, found_inf, sumsq, cuda);
  c.state = check_list(l.exp_avgs, c.numels, c.place, "exp_avgs", &c.layout);
  FO_CHECK(check_list(l.exp_avg_sqs, c.numels, c.place, "exp_avg_sqs", &c.layout) == c.state,
           "exp_avg_sqs and exp_avgs differ in dtype");
  if (amsgrad) {
    FO_CHECK(check_list(l.max_exp_avg_sqs, c.numels, c.place, "max_exp_avg_sqs", &c.layout) == c.state,
             "max_exp_avg_sqs and exp_avgs differ in dtype");
  } else {
    FO_CHECK(l.max_exp_avg_sqs.empty(), "max_exp_avg_sqs must be empty when amsgrad is false");
  }
  check_per_param_scalars(l.steps, l.params.size(), c.place, ScalarType::Float, "steps");
  return c;
}

inline CallInfo check_sgd_args(
    const SgdLists& l,
    bool has_momentum,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    bool cuda) {
  CallInfo c = check_common(l.params, l.grads, l.masters, lr_tensor, grad_scale, found_inf, sumsq, cuda);
  if (has_momentum) {
    c.state = check_list(l.momentum_buffers, c.numels, c.place, "momentum_buffers", &c.layout);
    check_per_param_scalars(l.momentum_first, l.params.size(), c.place, ScalarType::Bool, "momentum_first");
  } else {
    FO_CHECK(l.momentum_buffers.empty() && l.momentum_first.empty(),
             "momentum_buffers and momentum_first must be empty when momentum is 0");
  }
  return c;
}

}  // namespace fusedopt
