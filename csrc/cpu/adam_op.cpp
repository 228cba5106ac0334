// fusedopt::adam_ on the CPU: validate, compute each tensor's step constants,
// then one parallel region over every element of every tensor.
#include <vector>

#include "calls.h"
#include "ops.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {

AdamCall prepare_adam(const CallInfo& d, const AdamLists& l, bool amsgrad) {
  AdamCall call;
  call.fn = active_kernels().adam(d.param, d.grad, d.state, amsgrad, d.master);
  FO_CHECK(call.fn != nullptr, "no CPU Adam kernel for params ", dtype_name(d.param), ", grads ",
           dtype_name(d.grad), ", states ", dtype_name(d.state), d.master ? " with master weights" : "");
  const size_t n = l.params.size();
  call.numels = d.numels;
  call.tensors.resize(n);
  call.steps.resize(n);
  for (size_t i = 0; i < n; ++i) {
    call.steps[i] = static_cast<float*>(l.steps[i].mutable_data_ptr());
    call.tensors[i] = AdamTensor{
        l.params[i].mutable_data_ptr(),
        l.grads[i].const_data_ptr(),
        l.exp_avgs[i].mutable_data_ptr(),
        l.exp_avg_sqs[i].mutable_data_ptr(),
        amsgrad ? l.max_exp_avg_sqs[i].mutable_data_ptr() : nullptr,
        d.master ? static_cast<float*>(l.masters[i].mutable_data_ptr()) : nullptr};
  }
  return call;
}

void run_adam(const AdamCall& call, const math::AdamHyper& hyper, const StepScalars& s) {
  if (skip_step(s.found_inf)) return;
  const size_t n = call.tensors.size();
  const double lr_now = lr_value(s.lr, s.lr_tensor);
  const bool lr_f32 = lr_is_f32(s.lr_tensor);
  const math::GradFactors factors =
      math::grad_factors(scalar_ptr(s.grad_scale), scalar_ptr(s.sumsq), s.max_norm, s.max_value, s.maximize);

  // The constants depend on the tensor only through its step count, which is
  // nearly always the same for all: derive them once per distinct count in a
  // row (two pow() calls each) rather than once per tensor.
  std::vector<math::AdamConsts> consts(n);
  float last_step = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    const float step = *call.steps[i] + 1.0f;
    if (i == 0 || step != last_step) {
      consts[i] = math::adam_consts(hyper, lr_now, lr_f32, step);
      last_step = step;
    } else {
      consts[i] = consts[i - 1];
    }
  }

  for_each_share(call.numels,
                 [&](int64_t t, int64_t lo, int64_t hi) { call.fn(call.tensors[t], consts[t], factors, lo, hi); });

  for (float* step : call.steps) *step += 1.0f;
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
  const CallInfo d = check_adam_args(l, amsgrad, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/false);
  const AdamCall call = prepare_adam(d, l, amsgrad);
  run_adam(call, math::AdamHyper{beta1, beta2, eps, weight_decay, decoupled},
           StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize});
}

}  // namespace cpu
}  // namespace fusedopt
