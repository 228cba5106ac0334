// fusedopt::adam_ on the CPU: validate, compute each tensor's step constants,
// then one parallel region over every element of every tensor.
#include <vector>

#include "../op_args.h"
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {

void adam_(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& exp_avgs,
    const TensorList& exp_avg_sqs,
    const TensorList& max_exp_avg_sqs,
    const TensorList& steps,
    const TensorList& master_params,
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
  if (params.empty()) return;
  const CallInfo d = check_adam_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                                       master_params, amsgrad, lr_tensor, grad_scale, found_inf, sumsq,
                                       /*cuda=*/false);
  const AdamRangeFn fn = active_kernels().adam(d.param, d.grad, d.state, amsgrad, d.master);
  FO_CHECK(fn != nullptr, "no CPU Adam kernel for params ", dtype_name(d.param), ", grads ",
           dtype_name(d.grad), ", states ", dtype_name(d.state), d.master ? " with master weights" : "");
  if (skip_step(found_inf)) return;

  const size_t n = params.size();
  const math::AdamHyper hyper{beta1, beta2, eps, weight_decay, decoupled};
  const double lr_now = lr_value(lr, lr_tensor);
  const math::GradFactors factors =
      math::grad_factors(scalar_ptr(grad_scale), scalar_ptr(sumsq), max_norm, max_value, maximize);

  std::vector<AdamTensor> tensors(n);
  std::vector<math::AdamConsts> consts(n);
  std::vector<float*> step_ptrs(n);
  for (size_t i = 0; i < n; ++i) {
    step_ptrs[i] = static_cast<float*>(steps[i].mutable_data_ptr());
    consts[i] = math::adam_consts(hyper, lr_now, *step_ptrs[i] + 1.0f);
    tensors[i] = AdamTensor{
        params[i].mutable_data_ptr(),
        grads[i].const_data_ptr(),
        exp_avgs[i].mutable_data_ptr(),
        exp_avg_sqs[i].mutable_data_ptr(),
        amsgrad ? max_exp_avg_sqs[i].mutable_data_ptr() : nullptr,
        d.master ? static_cast<float*>(master_params[i].mutable_data_ptr()) : nullptr};
  }

  for_each_share(d.numels, [&](int64_t t, int64_t lo, int64_t hi) { fn(tensors[t], consts[t], factors, lo, hi); });

  for (float* s : step_ptrs) *s += 1.0f;
}

}  // namespace cpu
}  // namespace fusedopt
