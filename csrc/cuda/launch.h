// The boundary between the CUDA op entry points (host C++, which validate the
// torch tensors) and the kernels (.cu): plain pointers and values only, so the
// kernel files never see a torch type.
#pragma once

#include <cstdint>

#include "../rules/registry.h"
#include "../storage.h"

namespace fusedopt {
namespace cuda {

constexpr int kMaxStates = 4;  // state lists a rule may declare at most

// Per-tensor base pointers; a list that is absent is null.
struct TensorLists {
  int n = 0;
  const int64_t* numel = nullptr;
  void* const* param = nullptr;
  const void* const* grad = nullptr;
  void* const* state[kMaxStates] = {};  // the rule's active state lists, in its order (8-bit: the codes)
  float* const* absmax[kMaxStates] = {};  // 8-bit states: each state list's block scales (else null)
  float* const* master = nullptr;
  void* const* scalar = nullptr;  // the rule's per-tensor counter (float step | bool first flag)
  // stochastic rounding (else null): per tensor its int64 [seed, applied steps]
  // and the global index of its first element
  void* const* rounding_key = nullptr;
  const int64_t* rounding_offset = nullptr;
};

// The device values a step reads; null pointers mean "not given".
struct StepControl {
  double lr = 0.0;
  const void* lr_ptr = nullptr;  // one-element device tensor, float or double
  bool lr_is_double = false;
  const float* grad_scale = nullptr;
  const float* found_inf = nullptr;
  const float* sumsq = nullptr;
  double max_norm = 0.0;
  double max_value = 0.0;  // 0: no clamping
  bool maximize = false;
};

// One launch of a rule's update (rules.cu): the lists, their storage, how many
// of the rule's state lists are active, and the hyperparameters, as host values
// or (hyper_ptr, kHyper doubles on the device) read by the kernels.
template <class Rule>
struct RuleLaunch {
  TensorLists t;
  DType param_dtype;
  DType grad_dtype;
  DType state_dtype;
  int active;
  bool master;
  bool stochastic = false;  // bf16/fp16 params stored with stochastic rounding (t.rounding_key)
  typename Rule::Hyper hyper;
  const double* hyper_ptr = nullptr;
  StepControl ctl;
};

// grad_stats_: grads of one dtype per launch group; the host calls it once per
// dtype in a fixed order, and `first`/`last` bracket the whole call.
struct StatsLaunch {
  int n;
  const int64_t* numel;
  const void* const* grad;
  DType dtype;
  const float* grad_scale;  // may be null
  float* found_inf;
  float* sumsq;
  double* workspace;
  float max_value;  // the clamp bound (+inf: none)
  bool first;
  bool last;
};

struct UnscaleLaunch {
  int n;
  const int64_t* numel;
  void* const* grad;
  DType dtype;
  float* found_inf;
  const float* inv_scale;
};

struct ClampLaunch {
  int n;
  const int64_t* numel;
  void* const* grad;
  DType dtype;
  float lo;
  float hi;
};

// Partial sums per block plus the running total and the block counter.
constexpr int kStatsMaxBlocks = 2048;
constexpr int kWorkspaceDoubles = kStatsMaxBlocks + 2;

// Each returns the error string of a failed launch, or nullptr.
template <class Rule>
const char* launch_rule(const RuleLaunch<Rule>& a, void* stream);  // one instantiation per rule (rules.cu)
const char* launch_grad_stats(const StatsLaunch& a, void* stream);
const char* launch_unscale(const UnscaleLaunch& a, void* stream);
const char* launch_clamp(const ClampLaunch& a, void* stream);

}  // namespace cuda
}  // namespace fusedopt
