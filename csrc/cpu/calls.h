// A validated CPU call, ready to run: the kernel and each tensor's pointers.
// The list ops prepare one and run it at once; a step plan (plan_ops.cpp)
// prepares one when its grads are bound and runs it in the step.
#pragma once

#include <optional>
#include <vector>

#include "../op_args.h"
#include "kernels.h"

namespace fusedopt {
namespace cpu {

struct AdamCall {
  AdamRangeFn fn = nullptr;
  std::vector<int64_t> numels;
  std::vector<AdamTensor> tensors;
  std::vector<float*> steps;
};

struct SgdCall {
  SgdRangeFn fn = nullptr;
  bool has_momentum = false;
  std::vector<int64_t> numels;
  std::vector<SgdTensor> tensors;  // .first is read when the call runs
  std::vector<bool*> first;
};

AdamCall prepare_adam(const CallInfo& d, const AdamLists& l, bool amsgrad);

void run_adam(const AdamCall& call, const math::AdamHyper& hyper, const StepScalars& s);

SgdCall prepare_sgd(const CallInfo& d, const SgdLists& l, bool has_momentum);

void run_sgd(const SgdCall& call, double momentum, double dampening, double weight_decay, bool nesterov,
             const StepScalars& s);

// Grads as the AMP ops see them (dtypes may mix): const pointers for the
// stats pass, which only reads them, mutable ones for unscale_ and clip_value_.
template <class Ptr>
struct Grads {
  std::vector<Ptr> data;
  std::vector<DType> dtypes;
  std::vector<int64_t> numels;
  int64_t total = 0;
};
using GradList = Grads<const void*>;

// found_inf := 1 on any inf/nan grad; sumsq += the sum of squares of the
// unscaled (and clamped) grads, in an order fixed by the grads alone.
void run_grad_stats(const GradList& g, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
                    const Tensor& sumsq, double max_value);

// The one-element float32 CPU tensors grad_stats_ writes.
void check_stats_outputs(const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
                         const char* op);

}  // namespace cpu
}  // namespace fusedopt
