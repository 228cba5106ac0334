// The rules' list ops (<rule>_, schema in ops.cpp), written once for every
// backend: take the lists, validate the call (the same checks and messages on
// the CPU and CUDA), then hand it to the backend, which supplies
//
//   struct Backend {
//     static constexpr bool kCuda;  // where its tensors live
//     template <class Rule> static void run_list(const CallInfo&, const RuleLists&, int active,
//         const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor, const StepScalars&);
//   };
//
// and registers the ops with FUSEDOPT_LIST_OPS_IMPL (at the end).
#pragma once

#include <optional>
#include <vector>

#include <torch/csrc/stable/library.h>

#include "op_args.h"
#include "rules/registry.h"

namespace fusedopt {

template <class Backend, class Rule>
void list_step(StableListHandle params_arg, StableListHandle grads_arg, StableListHandle states_arg,
               StableListHandle counters_arg, StableListHandle master_params_arg, std::vector<double> hyper,
               std::optional<Tensor> hyper_tensor, double lr, std::optional<Tensor> lr_tensor,
               std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
               double max_norm, double max_value, bool maximize, std::optional<StableListHandle> rounding_keys_arg,
               std::optional<std::vector<int64_t>> rounding_offsets) {
  const TensorList params{params_arg}, grads{grads_arg}, states{states_arg}, counters{counters_arg},
      masters{master_params_arg};
  TensorList keys;
  if (rounding_keys_arg.has_value()) keys.take(*rounding_keys_arg);
  const std::vector<int64_t> offsets = rounding_offsets.value_or(std::vector<int64_t>{});
  const int active = Rule::active_states(unpack_hyper<Rule>(hyper, Rule::kName));
  if (params.empty()) return;
  const RuleLists l{params, grads, states, counters, masters, keys, offsets};
  const CallInfo d = check_rule_args<Rule>(l, active, lr_tensor, grad_scale, found_inf, sumsq, Backend::kCuda);
  check_hyper_tensor(hyper_tensor, Rule::kHyper, d.place, Rule::kName);
  Backend::template run_list<Rule>(
      d, l, active, hyper, hyper_tensor,
      StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize});
}

}  // namespace fusedopt

// Registers one backend's list ops, one per rule of the registry, for its dispatch
// key (FO_LIST_BACKEND names the backend's struct).
#define FO_RULE_LIST_IMPL(name, Rule) m.impl(#name "_", TORCH_BOX((&fusedopt::list_step<FO_LIST_BACKEND, Rule>)));
#define FUSEDOPT_LIST_OPS_IMPL(key)                 \
  STABLE_TORCH_LIBRARY_IMPL(fusedopt, key, m) {     \
    FUSEDOPT_RULES(FO_RULE_LIST_IMPL)               \
  }
