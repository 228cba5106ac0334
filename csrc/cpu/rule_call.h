// A validated CPU call of one rule, ready to run: the kernel and each tensor's
// pointers. The list op prepares one and runs it at once; a native plan
// (plan_ops.cpp) prepares one when its lists are validated and runs it each step.
#pragma once

#include <vector>

#include "../codecs.h"
#include "../op_args.h"
#include "kernels.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {

template <class Rule>
struct RuleCall {
  RangeFn<Rule> fn = nullptr;
  std::vector<int64_t> numels;
  std::vector<RuleTensor> tensors;
  std::vector<void*> counters;  // float* steps or bool* flags, per Rule::kCounter; empty for none
  int64_t align = kShareAlign;  // where threads' shares may start (8-bit states: whole blocks)
};

template <class Rule>
RuleCall<Rule> prepare_call(const CallInfo& d, const RuleLists& l, int active) {
  static_assert(Rule::kStates <= kMaxStates, "raise cpu::kMaxStates");
  RuleCall<Rule> call;
  call.fn = (active_kernels().*select_of<Rule>())(d.param, d.grad, d.state, active, d.master, d.stochastic);
  FO_CHECK(call.fn != nullptr, "no CPU ", Rule::kName, " kernel for params ", dtype_name(d.param), ", grads ",
           dtype_name(d.grad), ", states ", dtype_name(d.state), d.master ? " with master weights" : "",
           d.stochastic ? " with stochastic rounding" : "");
  const size_t n = l.params.size();
  call.numels = d.numels;
  call.tensors.resize(n);
  for (size_t i = 0; i < n; ++i) {
    RuleTensor& t = call.tensors[i];
    t.param = l.params[i].mutable_data_ptr();
    t.grad = l.grads[i].const_data_ptr();
    for (int k = 0; k < kMaxStates; ++k) t.states[k] = k < active ? l.states[k * n + i].mutable_data_ptr() : nullptr;
    t.master = d.master ? static_cast<float*>(l.masters[i].mutable_data_ptr()) : nullptr;
    t.key = d.stochastic ? static_cast<int64_t*>(l.keys[i].mutable_data_ptr()) : nullptr;
    t.offset = d.stochastic ? l.offsets[i] : 0;
    for (int k = 0; k < kMaxStates; ++k) {
      t.absmax[k] = d.state == DType::U8 && k < active
                        ? static_cast<float*>(l.states[(active + k) * n + i].mutable_data_ptr())
                        : nullptr;
    }
  }
  if (d.state == DType::U8) call.align = Quant8Codec::kBlock;
  call.counters.reserve(l.counters.size());
  for (TensorRef c : l.counters) call.counters.push_back(c.mutable_data_ptr());
  return call;
}

template <class Rule>
void advance_counters(const std::vector<void*>& counters) {
  for (void* c : counters) {
    if constexpr (Rule::kCounter == Counter::kStepF32) {
      *static_cast<float*>(c) += 1.0f;
    } else if constexpr (Rule::kCounter == Counter::kFirstBool) {
      *static_cast<bool*>(c) = false;
    }
  }
}

template <class Rule>
void run_call(const RuleCall<Rule>& call, const typename Rule::Hyper& hyper, const StepScalars& s) {
  if (skip_step(s.found_inf)) return;
  const size_t n = call.tensors.size();
  const LrArg lr{lr_value(s.lr, s.lr_tensor), lr_is_f32(s.lr_tensor)};
  const math::GradFactors factors =
      math::grad_factors(scalar_ptr(s.grad_scale), scalar_ptr(s.sumsq), s.max_norm, s.max_value, s.maximize);

  // The constants depend on the tensor only through its counter, which is
  // nearly always the same for all: derive them once per distinct value in a
  // row (Adam: two pow() calls each) rather than once per tensor.
  std::vector<typename Rule::Consts> consts(n);
  float last = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    const float value = counter_value<Rule>(call.counters.empty() ? nullptr : call.counters[i]);
    if (i == 0 || value != last) {
      consts[i] = Rule::consts(hyper, lr, value);
      last = value;
    } else {
      consts[i] = consts[i - 1];
    }
  }

  for_each_share(
      call.numels, [&](int64_t t, int64_t lo, int64_t hi) { call.fn(call.tensors[t], consts[t], factors, lo, hi); },
      call.align);

  advance_counters<Rule>(call.counters);
  // stochastic rounding's applied steps (the kernels rounded with key[1] + 1)
  for (const RuleTensor& t : call.tensors) {
    if (t.key != nullptr) t.key[1] += 1;
  }
}

// The hyperparameters a call runs with: from hyper_tensor when given (a CPU
// tensor: read here), else from `hyper`; either way the structure (the active
// state lists) must be what `hyper` says.
template <class Rule>
typename Rule::Hyper hyper_of(const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor,
                              const char* op) {
  const typename Rule::Hyper h = unpack_hyper<Rule>(hyper, op);
  if (!hyper_tensor.has_value()) return h;
  const typename Rule::Hyper t = Rule::unpack(static_cast<const double*>(hyper_tensor->const_data_ptr()));
  FO_CHECK(Rule::active_states(t) == Rule::active_states(h), op,
           ": hyper_tensor and hyper disagree on the state lists the call carries");
  return t;
}

}  // namespace cpu
}  // namespace fusedopt
