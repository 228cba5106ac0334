// Every fusedopt op schema, in one place. The CPU library defines them; the CUDA
// library only adds implementations for the CUDA dispatch key.
//
// Conventions: lists that are written carry an alias annotation (Tensor(a!)[]);
// the ops return nothing. grad_scale is GradScaler's scale (not its inverse);
// any nonzero found_inf skips the step without touching memory; when sumsq is
// given, grads are clipped to max_norm by the global norm sqrt(sumsq).
// max_value > 0 clamps each unscaled grad element to [-max_value, max_value]
// before the norm's coefficient applies (torch's idiom: unscale_,
// clip_grad_value_, clip_grad_norm_); 0 means no clamping.
#include <torch/csrc/stable/library.h>

#include "rules/registry.h"

#define FO_RULE_SCHEMA(name, Rule)                                                                        \
  m.def(#name                                                                                             \
        "_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] states, Tensor(c!)[] counters, "             \
        "Tensor(d!)[] master_params, float[] hyper, Tensor? hyper_tensor, float lr, Tensor? lr_tensor, " \
        "Tensor? grad_scale, Tensor? found_inf, Tensor? sumsq, float max_norm, float max_value=0., "      \
        "bool maximize=False, Tensor(e!)[]? rounding_keys=None, int[]? rounding_offsets=None) -> ()");
#define FO_RULE_PLAN_SCHEMA(name, Rule)                                                     \
  m.def(#name                                                                               \
        "_plan_make(Tensor[] params, Tensor[] grads, Tensor[] states, Tensor[] counters, " \
        "Tensor[] master_params, float[] hyper, Tensor[]? rounding_keys=None, int[]? rounding_offsets=None) -> int");

STABLE_TORCH_LIBRARY(fusedopt, m) {
  // One update step of a rule (csrc/rules/, registered in csrc/rules/registry.h),
  // the same schema for every rule. `states`: the rule's active state lists
  // one after another (state k of param i at k * len(params) + i); `counters`:
  // its per-param counter (Adam's steps, SGD's first-step flags; empty if it
  // has none); `hyper`: its packed hyperparameters; `hyper_tensor`: the same
  // values as a float64 tensor on the params' device, read instead of `hyper`
  // by the kernels (the structure, e.g. amsgrad, still comes from `hyper`).
  // `rounding_keys` (stochastic rounding of bf16/fp16 params, no masters;
  // csrc/math/stochastic.h): per param an int64 tensor [seed, applied steps]
  // that an applied step advances; `rounding_offsets`: per param the global
  // index of its first element (a shard's offset in the whole param).
  FUSEDOPT_RULES(FO_RULE_SCHEMA)
  m.def("rules() -> str");  // the registered rules' names, comma-separated
  // One read of every grad (dtypes may mix): found_inf := 1 on any inf/nan, and
  // sumsq += sum(clamp(g / grad_scale, -max_value, max_value)^2) (no clamp when
  // max_value is 0; found_inf looks at the grads before clamping, as unscale_
  // does before clip_grad_value_). Deterministic. Writes no grad.
  m.def(
      "grad_stats_(Tensor[] grads, Tensor? grad_scale, Tensor(a!) found_inf, Tensor(b!) sumsq, "
      "float max_value=0.) -> ()");
  // GradScaler.unscale_: grads *= inv_scale, found_inf := 1 on any inf/nan.
  m.def("unscale_(Tensor(a!)[] grads, Tensor(b!) found_inf, Tensor inv_scale) -> ()");
  // clip_grad_value_: grads := clamp(grads, -clip_value, clip_value), NaN kept,
  // in one pass (torch's clamp_min_ then clamp_max_, also for clip_value < 0).
  m.def("clip_value_(Tensor(a!)[] grads, float clip_value) -> ()");
  m.def("cpu_isa() -> str");
  // Native plans (eager steps only, CPU and CUDA; csrc/plan_ops_common.h): a bucket's lists
  // held native-side between steps, so that a step passes its grads and a
  // handle. <rule>_plan_make validates as <rule>_ does and binds the first step's
  // grads; plan_bind binds a later step's (false: the plan no longer fits, make
  // a new one; also for another backend's plan, where these grads are not);
  // plan_grad_stats_ is grad_stats_ over the bound grads; plan_step_ is the
  // rule's list op over the plan (the plan knows its rule) and releases the
  // grads. Given bind_grads and bind_plans, the last two first bind those (a
  // step's reused plans, folded into its first op: false, with nothing
  // written, where one does not fit). They write tensors the plan holds, which no schema
  // can name: torch.compile and opcheck see the list ops instead. `anchor`, an empty tensor on the plan's
  // device, picks the backend (not a param: a param moved to another device by
  // p.data = ... would send the call, plan_free included, to a backend that does
  // not have the plan).
  FUSEDOPT_RULES(FO_RULE_PLAN_SCHEMA)
  m.def("plan_bind(Tensor[] grads, int plan) -> bool");
  m.def(
      "plan_grad_stats_(int plan, Tensor? grad_scale, Tensor(a!) found_inf, Tensor(b!) sumsq, "
      "float max_value=0., Tensor[]? bind_grads=None, int[] bind_plans=[]) -> bool");
  m.def(
      "plan_step_(Tensor anchor, int plan, float[] hyper, Tensor? hyper_tensor, float lr, Tensor? lr_tensor, "
      "Tensor? grad_scale, Tensor? found_inf, Tensor? sumsq, float max_norm, float max_value=0., "
      "bool maximize=False, Tensor[]? bind_grads=None, int[] bind_plans=[]) -> bool");
  // plan_unscale_ is unscale_ over the bound grads, which stay bound (torch's AMP
  // idiom: csrc/plan_bound_ops.h). Given bind_plans without bind_grads, the ops
  // that take binds re-check the grads those plans still hold instead.
  m.def(
      "plan_unscale_(int plan, Tensor(a!) found_inf, Tensor inv_scale, Tensor[]? bind_grads=None, "
      "int[] bind_plans=[]) -> bool");
  m.def("plan_release(Tensor anchor, int plan) -> ()");  // unbinds, for an update not through the plan
  m.def("plan_free(Tensor anchor, int plan) -> ()");
}
