// Every rule's list op on the CPU (<rule>_, schema in ops.cpp): validate,
// derive each tensor's constants, then one parallel region over every element
// of every tensor. Written once; registered for each rule of the registry.
#include <string>

#include <torch/csrc/stable/library.h>

#include "ops.h"
#include "rule_call.h"

namespace fusedopt {
namespace cpu {

template <class Rule>
void list_step(StableListHandle params_arg, StableListHandle grads_arg, StableListHandle states_arg,
               StableListHandle counters_arg, StableListHandle master_params_arg, std::vector<double> hyper,
               std::optional<Tensor> hyper_tensor, double lr, std::optional<Tensor> lr_tensor,
               std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
               double max_norm, double max_value, bool maximize) {
  const TensorList params{params_arg}, grads{grads_arg}, states{states_arg}, counters{counters_arg},
      masters{master_params_arg};
  const typename Rule::Hyper h = unpack_hyper<Rule>(hyper, Rule::kName);
  if (params.empty()) return;
  const int active = Rule::active_states(h);
  const RuleLists l{params, grads, states, counters, masters};
  const CallInfo d = check_rule_args<Rule>(l, active, lr_tensor, grad_scale, found_inf, sumsq, /*cuda=*/false);
  check_hyper_tensor(hyper_tensor, Rule::kHyper, d.place, Rule::kName);
  const typename Rule::Hyper run_hyper = hyper_of<Rule>(hyper, hyper_tensor, Rule::kName);
  const RuleCall<Rule> call = prepare_call<Rule>(d, l, active);
  run_call<Rule>(call, run_hyper, StepScalars{lr, lr_tensor, grad_scale, found_inf, sumsq, max_norm, max_value, maximize});
}

std::string rules() {
  std::string names;
#define FO_RULE_NAME(name, Rule) names += (names.empty() ? "" : ",") + std::string(#name);
  FUSEDOPT_RULES(FO_RULE_NAME)
#undef FO_RULE_NAME
  return names;
}

}  // namespace cpu
}  // namespace fusedopt

STABLE_TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
#define FO_RULE_IMPL(name, Rule) m.impl(#name "_", TORCH_BOX(&fusedopt::cpu::list_step<Rule>));
  FUSEDOPT_RULES(FO_RULE_IMPL)
#undef FO_RULE_IMPL
}
