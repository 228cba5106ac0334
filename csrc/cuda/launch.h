// The boundary between the CUDA op entry points (host C++, which validate the
// torch tensors) and the kernels (.cu): plain pointers and values only, so the
// kernel files never see a torch type.
#pragma once

#include <cstdint>

#include "../math/adam.h"
#include "../math/sgd.h"
#include "../storage.h"

namespace fusedopt {
namespace cuda {

// Per-tensor base pointers; a list that is absent is null.
struct TensorLists {
  int n = 0;
  const int64_t* numel = nullptr;
  void* const* param = nullptr;
  const void* const* grad = nullptr;
  void* const* state0 = nullptr;  // exp_avg | momentum_buffer
  void* const* state1 = nullptr;  // exp_avg_sq
  void* const* state2 = nullptr;  // max_exp_avg_sq
  float* const* master = nullptr;
  void* const* scalar = nullptr;  // per-tensor step (float) | momentum_first (bool)
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

struct AdamLaunch {
  TensorLists t;
  DType param_dtype;
  DType grad_dtype;
  DType state_dtype;
  bool amsgrad;
  bool master;
  math::AdamHyper hyper;
  StepControl ctl;
};

struct SgdLaunch {
  TensorLists t;
  DType param_dtype;
  DType grad_dtype;
  DType state_dtype;
  bool has_momentum;
  bool master;
  double momentum;
  double dampening;
  double weight_decay;
  bool nesterov;
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
const char* launch_adam(const AdamLaunch& a, void* stream);
const char* launch_sgd(const SgdLaunch& a, void* stream);
const char* launch_grad_stats(const StatsLaunch& a, void* stream);
const char* launch_unscale(const UnscaleLaunch& a, void* stream);
const char* launch_clamp(const ClampLaunch& a, void* stream);

}  // namespace cuda
}  // namespace fusedopt
