// fusedopt::sgd_ on the CPU: validate, then one parallel region over every
// element of every tensor.
#include <vector>

#include "calls.h"
#include "ops.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {

SgdCall prepare_sgd(const CallInfo& d, const SgdLists& l, bool has_momentum) {
  SgdCall call;
  call.fn = active_kernels().sgd(d.param, d.grad, d.state, has_momentum, d.master);
  FO_CHECK(call.fn != nullptr, "no CPU SGD kernel for params ", dtype_name(d.param), ", grads ",
           dtype_name(d.grad), ", momentum buffers ", dtype_name(d.state),
           d.master ? " with master weights" : "");
  const size_t n = l.params.size();
  call.has_momentum = has_momentum;
  call.numels = d.numels;
  call.tensors.resize(n);
  if (has_momentum) call.first.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (has_momentum) call.first[i] = static_cast<bool*>(l.momentum_first[i].mutable_data_ptr());
    call.tensors[i] = SgdTensor{
        l.params[i].mutable_data_ptr(),
        l.grads[i].const_data_ptr(),
        has_momentum ? l.momentum_buffers[i].mutable_data_ptr() : nullptr,
        d.master ? static_cast<float*>(l.masters[i].mutable_data_ptr()) : nullptr,
        false};
  }
  return call;
}

void run_sgd(const SgdCall& call, double momentum, double dampening, double weight_decay, bool nesterov,
             const StepScalars& s) {
  if (skip_step(s.found_inf)) return;
  const size_t n = call.tensors.size();
  const math::SgdConsts consts = math::sgd_consts(lr_value(s.lr, s.lr_tensor), momentum, dampening, weight_decay,
                                                  nesterov);
  const math::GradFactors factors =
      math::grad_factors(scalar_ptr(s.grad_scale), scalar_ptr(s.sumsq), s.max_norm, s.max_value, s.maximize);

  // the first-step flags as they are now (a copy: the call may run again)
  std::vector<SgdTensor> tensors = call.tensors;
  if (call.has_momentum) {
    for (size_t i = 0; i < n; ++i) tensors[i].first = *call.first[i];
  }

  for_each_share(call.numels, [&](int64_t t, int64_t lo, int64_t hi) { call.fn(tensors[t], consts, factors, lo, hi); });

  for (bool* first : call.first) *first = false;
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
  const CallInfo d = check_sgd_args(l, has_momentum, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/false);
  const SgdCall call = prepare_sgd(d, l, has_momentum);
  run_sgd(call, momentum, dampening, weight_decay, nesterov,
          StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize});
}

}  // namespace cpu
}  // namespace fusedopt
