// Every rule's list op on CUDA (<rule>_; the shared entry point, which validates
// as the CPU does: list_op_common.h): gather pointers, launch on torch's current stream. Nothing here reads a
// device value: lr, scale, found_inf and the norm are read by the kernels.
#include "../list_op_common.h"
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
  for (int k = 0; k < kMaxStates; ++k) {
    t.state[k] = data_or_null(state[k]);
    t.absmax[k] = absmax[k].empty() ? nullptr : reinterpret_cast<float* const*>(absmax[k].data());
  }
  t.master = master.empty() ? nullptr : reinterpret_cast<float* const*>(master.data());
  t.scalar = data_or_null(scalar);
  t.rounding_key = data_or_null(rounding_key);
  t.rounding_offset = rounding_offset.empty() ? nullptr : rounding_offset.data();
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
    if (d.state == DType::U8) {
      // 8-bit states: the scales' lists follow the codes' (op_args.h)
      p.absmax[k].reserve(n);
      for (size_t i = 0; i < n; ++i) p.absmax[k].push_back(l.states[(active + k) * n + i].mutable_data_ptr());
    }
  }
  if (d.master) p.master = mutable_ptrs(l.masters);
  if (!l.counters.empty()) p.scalar = mutable_ptrs(l.counters);
  if (d.stochastic) {
    p.rounding_key = mutable_ptrs(l.keys);
    p.rounding_offset = l.offsets;
  }
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
  a.stochastic = d.stochastic;
  a.hyper = h;
  a.hyper_ptr = hyper_tensor.has_value() ? static_cast<const double*>(hyper_tensor->const_data_ptr()) : nullptr;
  a.ctl = ctl;
  check_launch(launch_rule<Rule>(a, current_stream(d.place.index)), op);
}

namespace {

struct CudaListOps {
  static constexpr bool kCuda = true;

  template <class Rule>
  static void run_list(const CallInfo& d, const RuleLists& l, int active, const std::vector<double>& hyper,
                       const std::optional<Tensor>& hyper_tensor, const StepScalars& s) {
    // on the tensors' device before any mutable pointer is taken (that may copy a
    // copy-on-write tensor, allocating on the current device)
    torch::stable::accelerator::DeviceGuard guard(d.place.index);
    const LaunchPointers ptrs = rule_pointers(d, l, active);
    run_rule<Rule>(ptrs, d, active, hyper, hyper_tensor, control_of(s), Rule::kName);
  }
};

}  // namespace

#define FO_RULE_RUN(name, Rule)                                                                                   \
  template void run_rule<Rule>(const LaunchPointers&, const CallInfo&, int, const std::vector<double>&,          \
                               const std::optional<Tensor>&, const StepControl&, const char*);
FUSEDOPT_RULES(FO_RULE_RUN)
#undef FO_RULE_RUN

}  // namespace cuda
}  // namespace fusedopt

#define FO_LIST_BACKEND fusedopt::cuda::CudaListOps
FUSEDOPT_LIST_OPS_IMPL(CUDA)
