// The CPU stats pass and AMP helpers shared by the list ops and the native plans
// (a rule's call: rule_call.h).
#pragma once

#include <optional>
#include <vector>

#include "../op_args.h"
#include "kernels.h"

namespace fusedopt {
namespace cpu {

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

// grads *= inv_scale, found_inf := 1 on any inf/nan grad (unscale_, and a
// native plan's plan_unscale_ over its bound grads); `op` names the caller in errors.
void run_unscale(const TensorList& grads, const Tensor& found_inf, const Tensor& inv_scale, const char* op);

// The one-element float32 CPU tensors grad_stats_ writes.
void check_stats_outputs(const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
                         const char* op);

}  // namespace cpu
}  // namespace fusedopt
