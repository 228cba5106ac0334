// Validation of the optimizer ops' argument lists, shared by the CPU and CUDA
// entry points so both refuse exactly the same calls with the same messages.
#pragma once

#include "rules/rule.h"
#include "tensor_checks.h"

namespace fusedopt {

// What a validated call runs with (the Python side buckets tensors this way).
struct CallInfo {
  Place place;
  std::vector<int64_t> numels;
  DType param;
  DType grad;
  DType state;  // F32 when there is no state list
  bool master;       // fp32 master weights are present
  bool stochastic = false;  // bf16/fp16 params stored with stochastic rounding
  Layout layout;     // the params' memory layout, which every list shares
};

// The step's scalars as an update op (list op or plan) received them.
struct StepScalars {
  double lr;
  const std::optional<Tensor>& lr_tensor;
  const std::optional<Tensor>& grad_scale;
  const std::optional<Tensor>& found_inf;
  const std::optional<Tensor>& sumsq;
  double max_norm;
  double max_value;
  bool maximize;
};

// The one-element tensors a step reads (each may be absent), where the call runs.
inline void check_step_scalars(
    const Place& at,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq) {
  check_lr_tensor(lr_tensor, at);
  check_optional_scalar(grad_scale, at, "grad_scale");
  check_optional_scalar(found_inf, at, "found_inf");
  check_optional_scalar(sumsq, at, "sumsq");
}

inline CallInfo check_common(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& masters,
    const std::optional<Tensor>& lr_tensor,
    const std::optional<Tensor>& grad_scale,
    const std::optional<Tensor>& found_inf,
    const std::optional<Tensor>& sumsq,
    bool cuda) {
  FO_CHECK(!params.empty(), "params is empty");
  CallInfo c;
  c.place = place_of(params[0]);
  FO_CHECK(c.place.cuda == cuda, "params[0] is not a ", cuda ? "CUDA" : "CPU", " tensor");
  c.numels.reserve(params.size());
  for (TensorRef p : params) c.numels.push_back(p.numel());
  c.param = check_list(params, c.numels, c.place, "params", nullptr, &c.layout);
  c.grad = check_list(grads, c.numels, c.place, "grads", &c.layout);
  FO_CHECK(c.grad == c.param || c.grad == DType::F32, "grads of ", dtype_name(c.param),
           " params must be ", dtype_name(c.param), " or float32, got ", dtype_name(c.grad));
  c.master = !masters.empty();
  if (c.master) {
    FO_CHECK(check_list(masters, c.numels, c.place, "master_params", &c.layout) == DType::F32,
             "master_params must be float32");
    FO_CHECK(c.param != DType::F32, "master_params are for float16/bfloat16 params only");
  }
  c.state = DType::F32;
  check_step_scalars(c.place, lr_tensor, grad_scale, found_inf, sumsq);
  return c;
}

// The lists of one rule call, in the schema's order (a list op's arguments, or
// a plan's held lists with a step's grads). `states` holds the active state
// lists one after another: states[k * n + i] is state k of param i.
struct RuleLists {
  const TensorList& params;
  const TensorList& grads;
  const TensorList& states;
  const TensorList& counters;
  const TensorList& masters;
  // stochastic rounding (empty: off): per param its int64 [seed, applied
  // steps] and the global index of its first element
  const TensorList& keys;
  const std::vector<int64_t>& offsets;
};

// The lists of stochastic rounding: one key per param, an int64 tensor of two
// values, contiguous, where the params live; one offset >= 0 per param; the
// params bf16/fp16, without masters, contiguous (the kernels index elements
// in memory order, which is the flattened order only for contiguous params).
inline void check_rounding_lists(const RuleLists& l, CallInfo& c, const char* op) {
  if (l.keys.empty()) {
    FO_CHECK(l.offsets.empty(), op, ": rounding_offsets without rounding_keys");
    return;
  }
  const size_t n = l.params.size();
  FO_CHECK(l.keys.size() == n && l.offsets.size() == n, op, ": stochastic rounding needs one rounding key and one "
           "offset per param (", n, "), got ", l.keys.size(), " and ", l.offsets.size());
  FO_CHECK(c.param == DType::BF16 || c.param == DType::F16, op, ": stochastic rounding rounds bfloat16/float16 "
           "params; these are ", dtype_name(c.param));
  FO_CHECK(!c.master, op, ": stochastic rounding takes no master_params (with a master, the param is its rounding)");
  for (size_t i = 0; i < n; ++i) {
    const TensorRef k = l.keys[i];
    check_place(k, c.place, "rounding_keys", i);
    FO_CHECK(k.dtype_code() == raw::codes().i64 && k.numel() == 2 && k.is_contiguous(), op, ": rounding_keys[", i,
             "] must be a contiguous int64 tensor of 2 values (seed, applied steps)");
    FO_CHECK(l.offsets[i] >= 0, op, ": rounding_offsets[", i, "] is negative");
    FO_CHECK(c.layout.contiguous[i], op, ": params[", i, "] is not contiguous; stochastic rounding needs "
             "contiguous params");
  }
  c.stochastic = true;
}

// The packed hyperparameters of a call: `hyper` as given, checked for the
// rule's length. (A hyper_tensor, when given, carries the same values as device
// data; the host reads the structure, which active_states() depends on, from
// `hyper`.)
template <class Rule>
typename Rule::Hyper unpack_hyper(const std::vector<double>& hyper, const char* op) {
  FO_CHECK(static_cast<int>(hyper.size()) == Rule::kHyper, op, ": hyper must hold ", Rule::kHyper,
           " values, got ", hyper.size());
  return Rule::unpack(hyper.data());
}

inline void check_hyper_tensor(const std::optional<Tensor>& t, int expected, const Place& at, const char* op) {
  if (!t.has_value()) return;
  FO_CHECK(t->scalar_type() == ScalarType::Double, op, ": hyper_tensor must be float64");
  FO_CHECK(t->dim() == 1 && t->numel() == expected, op, ": hyper_tensor must be 1-D with ", expected, " values");
  FO_CHECK(t->is_contiguous(), op, ": hyper_tensor must be contiguous");
  const Place p = place_of(*t);
  FO_CHECK(p.cuda == at.cuda && (!at.cuda || p.index == at.index), op,
           ": hyper_tensor must be on the params' device");
}

// The state lists of an 8-bit call: `active` lists of uint8 codes, each code
// tensor contiguous with its param's element count, then `active` lists of
// float32 absmax, contiguous, one per block of 256 elements
// (states[(active + k) * n + i] belongs to states[k * n + i]). The params must be
// contiguous: the kernels cut blocks from the flat memory, the format from the
// flattened (logical) order.
inline void check_quant8_states(const RuleLists& l, int active, CallInfo& c, const char* const* names) {
  const size_t n = l.params.size();
  const raw::Codes& codes = raw::codes();
  for (size_t i = 0; i < n; ++i) {
    FO_CHECK(c.layout.contiguous[i], "params[", i, "] is not contiguous; 8-bit states need contiguous params");
  }
  for (int k = 0; k < active; ++k) {
    for (size_t i = 0; i < n; ++i) {
      const TensorRef q = l.states[k * n + i];
      const TensorRef a = l.states[(active + k) * n + i];
      check_place(q, c.place, names[k], i);
      FO_CHECK(q.dtype_code() == codes.u8, names[k], "[", i, "] has dtype ", dtype_str(q.scalar_type()),
               "; the codes of 8-bit states are uint8 (every state list of a call alike)");
      FO_CHECK(q.numel() == c.numels[i], names[k], "[", i, "] has ", q.numel(), " codes but params[", i, "] has ",
               c.numels[i], " elements");
      FO_CHECK(q.is_contiguous(), names[k], "[", i, "] (8-bit codes) is not contiguous");
      check_place(a, c.place, "absmax", i);
      FO_CHECK(a.dtype_code() == codes.f32, "the absmax of ", names[k], "[", i, "] has dtype ",
               dtype_str(a.scalar_type()), "; block scales are float32");
      const int64_t blocks = (c.numels[i] + 255) / 256;
      FO_CHECK(a.numel() == blocks, "the absmax of ", names[k], "[", i, "] has ", a.numel(), " elements; ",
               c.numels[i], " codes in blocks of 256 need ", blocks);
      FO_CHECK(a.is_contiguous(), "the absmax of ", names[k], "[", i, "] is not contiguous");
    }
  }
  c.state = DType::U8;
}

// Validates a call of `Rule` with `active` state lists. Throws before anything
// is written.
template <class Rule>
CallInfo check_rule_args(const RuleLists& l, int active, const std::optional<Tensor>& lr_tensor,
                         const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                         const std::optional<Tensor>& sumsq, bool cuda) {
  CallInfo c = check_common(l.params, l.grads, l.masters, lr_tensor, grad_scale, found_inf, sumsq, cuda);
  check_rounding_lists(l, c, Rule::kName);
  const size_t n = l.params.size();
  const size_t lists = n * static_cast<size_t>(active);
  const bool q8 = active > 0 && l.states.size() == 2 * lists && l.states[0].dtype_code() == raw::codes().u8;
  FO_CHECK(q8 || l.states.size() == lists, Rule::kName, ": states must hold ", active, " lists of ", n,
           " tensors (", lists, "), got ", l.states.size(), " (8-bit states: ", 2 * lists,
           ", the uint8 code lists, then the float32 absmax lists)");
  if (q8) {
    check_quant8_states(l, active, c, Rule::kStateNames);
  }
  for (int k = 0; k < active && !q8; ++k) {
    const TensorSlice list(l.states, k * n, n);
    const DType d = check_list(list, c.numels, c.place, Rule::kStateNames[k], &c.layout);
    if (k == 0) {
      c.state = d;
    } else {
      FO_CHECK(d == c.state, Rule::kStateNames[k], " and ", Rule::kStateNames[0], " differ in dtype");
    }
  }
  if constexpr (Rule::kCounter == Counter::kStepF32) {
    check_per_param_scalars(l.counters, n, c.place, ScalarType::Float, Rule::kCounterName);
  } else if constexpr (Rule::kCounter == Counter::kFirstBool) {
    if (active > 0) {
      check_per_param_scalars(l.counters, n, c.place, ScalarType::Bool, Rule::kCounterName);
    } else {
      FO_CHECK(l.counters.empty(), Rule::kCounterName, " must be empty when the call carries no state");
    }
  } else {
    FO_CHECK(l.counters.empty(), "counters must be empty: ", Rule::kName, " keeps no per-tensor counter");
  }
  return c;
}

}  // namespace fusedopt
