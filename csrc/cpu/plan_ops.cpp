// Native plans on the CPU: a rule's prepared CPU call (rule_call.h) and the
// bound grads as the stats pass reads them, for the plan ops of
// plan_ops_common.h. The rules' list ops remain what torch.compile and opcheck see.
#include "../plan_ops_common.h"
#include "calls.h"
#include "ops.h"
#include "rule_call.h"

namespace fusedopt {
namespace cpu {
namespace {

struct CpuPlans {
  static constexpr bool kCuda = false;
  static constexpr int64_t kFirstId = 1;

  // plan_unscale_ over a plan's bound grads (plan_bound_ops.h)
  static void unscale(const TensorList& grads, const Tensor& found_inf, const Tensor& inv_scale, const char* op) {
    run_unscale(grads, found_inf, inv_scale, op);
  }

  template <class Rule>
  struct Call {
    RuleCall<Rule> rule_call;
    GradList grads;  // the bound grads as the stats pass reads them

    void prepare(const CallInfo& d, const RuleLists& l, int active) {
      rule_call = prepare_call<Rule>(d, l, active);
      grads.numels = d.numels;
      grads.dtypes.assign(d.numels.size(), d.grad);
      grads.data.assign(d.numels.size(), nullptr);
      grads.total = 0;
      for (int64_t n : d.numels) grads.total += n;
      set_grads(l.grads);
    }

    void set_grads(const TensorList& bound) {
      for (size_t i = 0; i < bound.size(); ++i) {
        const void* g = bound[i].const_data_ptr();
        grads.data[i] = g;
        rule_call.tensors[i].grad = g;
      }
    }

    void stats(const Place&, const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
               double max_value) {
      check_stats_outputs(grad_scale, found_inf, sumsq, "plan_grad_stats_");
      run_grad_stats(grads, grad_scale, found_inf, sumsq, max_value);
    }

    void step(const std::vector<double>& hyper, const std::optional<Tensor>& hyper_tensor, const StepScalars& s) {
      check_hyper_tensor(hyper_tensor, Rule::kHyper, Place{false, -1}, "plan_step_");
      run_call<Rule>(rule_call, hyper_of<Rule>(hyper, hyper_tensor, "plan_step_"), s);
    }
  };
};

}  // namespace
}  // namespace cpu
}  // namespace fusedopt

#define FO_PLAN_BACKEND fusedopt::cpu::CpuPlans
FUSEDOPT_PLAN_OPS_IMPL(CPU, fusedopt::cpu::CpuPlans)
