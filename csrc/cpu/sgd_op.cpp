// fusedopt::sgd_ on the CPU: validate, then one parallel region over every
// element of every tensor.
#include <vector>

#include "../op_args.h"
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {

void sgd_(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& momentum_buffers,
    const TensorList& momentum_first,
    const TensorList& master_params,
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
  if (params.empty()) return;
  const bool has_momentum = momentum != 0.0;
  const CallInfo d = check_sgd_args(params, grads, momentum_buffers, momentum_first, master_params,
                                      has_momentum, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/false);
  const SgdRangeFn fn = active_kernels().sgd(d.param, d.grad, d.state, has_momentum, d.master);
  FO_CHECK(fn != nullptr, "no CPU SGD kernel for params ", dtype_name(d.param), ", grads ",
           dtype_name(d.grad), ", momentum buffers ", dtype_name(d.state),
           d.master ? " with master weights" : "");
  if (skip_step(found_inf)) return;

  const size_t n = params.size();
  const math::SgdConsts consts =
      math::sgd_consts(lr_value(lr, lr_tensor), momentum, dampening, weight_decay, nesterov);
  const math::GradFactors factors =
      math::grad_factors(scalar_ptr(grad_scale), scalar_ptr(sumsq), max_norm, max_value, maximize);

  std::vector<SgdTensor> tensors(n);
  for (size_t i = 0; i < n; ++i) {
    tensors[i] = SgdTensor{
        params[i].mutable_data_ptr(),
        grads[i].const_data_ptr(),
        has_momentum ? momentum_buffers[i].mutable_data_ptr() : nullptr,
        d.master ? static_cast<float*>(master_params[i].mutable_data_ptr()) : nullptr,
        has_momentum && *static_cast<const bool*>(momentum_first[i].data_ptr())};
  }

  for_each_share(d.numels, [&](int64_t t, int64_t lo, int64_t hi) { fn(tensors[t], consts, factors, lo, hi); });

  if (has_momentum) {
    for (size_t i = 0; i < n; ++i) *static_cast<bool*>(momentum_first[i].mutable_data_ptr()) = false;
  }
}

}  // namespace cpu
}  // namespace fusedopt
