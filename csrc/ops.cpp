// Every fusedopt op schema, in one place. The CPU library defines them; the CUDA
// library only adds implementations for the CUDA dispatch key.
//
// Conventions: lists that are written carry an alias annotation (Tensor(a!)[]);
// the ops return nothing. grad_scale is GradScaler's scale (not its inverse);
// any nonzero found_inf skips the step without touching memory; when sumsq is
// given, grads are clipped to max_norm by the global norm sqrt(sumsq).
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(fusedopt, m) {
  m.def(
      "adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] steps, Tensor(f!)[] master_params, float lr, "
      "Tensor? lr_tensor, float beta1, float beta2, float eps, float weight_decay, bool decoupled, "
      "bool amsgrad, bool maximize, Tensor? grad_scale, Tensor? found_inf, Tensor? sumsq, "
      "float max_norm) -> ()");
  m.def(
      "sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "Tensor(c!)[] momentum_first, Tensor(d!)[] master_params, float lr, Tensor? lr_tensor, "
      "float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, "
      "Tensor? grad_scale, Tensor? found_inf, Tensor? sumsq, float max_norm) -> ()");
  // One read of every grad (dtypes may mix): found_inf := 1 on any inf/nan, and
  // sumsq += sum((g / grad_scale)^2). Deterministic. Writes no grad.
  m.def("grad_stats_(Tensor[] grads, Tensor? grad_scale, Tensor(a!) found_inf, Tensor(b!) sumsq) -> ()");
  // GradScaler.unscale_: grads *= inv_scale, found_inf := 1 on any inf/nan.
  m.def("unscale_(Tensor(a!)[] grads, Tensor(b!) found_inf, Tensor inv_scale) -> ()");
  m.def("cpu_isa() -> str");
}
