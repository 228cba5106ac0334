// Every rule's list op on the CPU (<rule>_; the shared entry point:
// list_op_common.h): derive each tensor's constants, then one parallel region
// over every element of every tensor.
#include <string>

#include "../list_op_common.h"
#include "ops.h"
#include "rule_call.h"

namespace fusedopt {
namespace cpu {
namespace {

struct CpuListOps {
  static constexpr bool kCuda = false;

  template <class Rule>
  static void run_list(const CallInfo& d, const RuleLists& l, int active, const std::vector<double>& hyper,
                       const std::optional<Tensor>& hyper_tensor, const StepScalars& s) {
    const RuleCall<Rule> call = prepare_call<Rule>(d, l, active);
    run_call<Rule>(call, hyper_of<Rule>(hyper, hyper_tensor, Rule::kName), s);
  }
};

}  // namespace

std::string rules() {
  std::string names;
#define FO_RULE_NAME(name, Rule) names += (names.empty() ? "" : ",") + std::string(#name);
  FUSEDOPT_RULES(FO_RULE_NAME)
#undef FO_RULE_NAME
  return names;
}

}  // namespace cpu
}  // namespace fusedopt

#define FO_LIST_BACKEND fusedopt::cpu::CpuListOps
FUSEDOPT_LIST_OPS_IMPL(CPU)
