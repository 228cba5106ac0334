// Every rule's list op on CUDA (<rule>_, schema in ops.cpp): validate (the same
// checks as the CPU), gather pointers, launch on torch's current stream. Nothing here reads a
// device value: lr, scale, found_inf and the norm are read by the kernels.
#include <torch/csrc/stable/library.h>

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
  for (int k = 0; k < kMaxStates; ++k) t.state[k] = data_or_null(state[k]);
  t.master = master.empty() ? nullptr : reinterpret_cast<float* const*>(master.data());
  t.scalar = data_or_null(scalar);
  return t;
}

LaunchPointers rule_pointers(const CallInfo& d, const RuleLists& l, int active) {
  LaunchPointers p;
  const size_t n = l.params.size();
  p.param = mutable_ptrs(l.params);
  p.grad = const_ptrs(l.grads);
  for (int k = 0; k < active; ++k) {
    p.state[k].reserve(n);
    for (size_t i = 0; i < n; ++i) p.state[k].push_back(l.states[k * n + i].mutable_data_ptr());
  }
  if (d.master) p.master = mutable_ptrs(l.masters);
  if (!l.counters.empty()) p.scalar = mutable_ptrs(l.counters);
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

template <class Rule>
void run_rule(const LaunchPointers& ptrs, const CallInfo& d, int active, const std::vector<double>& hyper,
              const std::optional<Tensor>& hyper_tensor, const StepControl& ctl, const char* op) {
  const typename Rule::Hyper h = unpack_hyper<Rule>(hyper, op);
  check_hyper_tensor(hyper_tensor, Rule::kHyper, d.place, op);
  torch::stable::accelerator::DeviceGuard guard(d.place.index);
  RuleLaunch<Rule> a;
  a.t = ptrs.view(d.numels);
  a.param_dtype = d.param;
  a.grad_dtype = d.grad;
  a.state_dtype = d.state;
  a.active = active;
  a.master = d.master;
  a.hyper = h;
  a.hyper_ptr = hyper_tensor.has_value() ? static_cast<const double*>(hyper_tensor->const_data_ptr()) : nullptr;
  a.ctl = ctl;
  check_launch(launch_rule<Rule>(a, current_stream(d.place.index)), op);
}

template <class Rule>
void list_step(StableListHandle params_arg, StableListHandle grads_arg, StableListHandle states_arg,
               StableListHandle counters_arg, StableListHandle master_params_arg, std::vector<double> hyper,
               std::optional<Tensor> hyper_tensor, double lr, std::optional<Tensor> lr_tensor,
               std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
               double max_norm, double max_value, bool maximize) {
  const TensorList params{params_arg}, grads{grads_arg}, states{states_arg}, counters{counters_arg},
      masters{master_params_arg};
  const int active = Rule::active_states(unpack_hyper<Rule>(hyper, Rule::kName));
  if (params.empty()) return;
  const RuleLists l{params, grads, states, counters, masters};
  const CallInfo d = check_rule_args<Rule>(l, active, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/true);
  // on the tensors' device before any mutable pointer is taken (that may copy a
  // copy-on-write tensor, allocating on the current device)
  torch::stable::accelerator::DeviceGuard guard(d.place.index);
  const LaunchPointers ptrs = rule_pointers(d, l, active);
  run_rule<Rule>(ptrs, d, active, hyper, hyper_tensor,
                 control_of(StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize}),
                 Rule::kName);
}

#define FO_RULE_RUN(name, Rule)                                                                                   \
  template void run_rule<Rule>(const LaunchPointers&, const CallInfo&, int, const std::vector<double>&,          \
                               const std::optional<Tensor>&, const StepControl&, const char*);
FUSEDOPT_RULES(FO_RULE_RUN)
#undef FO_RULE_RUN

}  // namespace cuda
}  // namespace fusedopt

STABLE_TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
#define FO_RULE_IMPL(name, Rule) m.impl(#name "_", TORCH_BOX(&fusedopt::cuda::list_step<Rule>));
  FUSEDOPT_RULES(FO_RULE_IMPL)
#undef FO_RULE_IMPL
}
