// fusedopt::grad_stats_ and fusedopt::unscale_ on CUDA. Grads may mix dtypes;
// they are launched one dtype after another, always in the same order.
#include <torch/csrc/stable/ops.h>

#include <array>

#include "../math/clip.h"
#include "calls.h"
#include "device.h"
#include "launch.h"
#include "ops.h"

namespace fusedopt {
namespace cuda {
namespace {

// Grads split by dtype, keeping their order within each dtype.
struct ByDType {
  std::array<std::vector<void*>, 3> ptrs;
  std::array<std::vector<int64_t>, 3> numels;
};

// `writable`: unscale_ writes the grads; grad_stats_ only reads them, and asking
// for a mutable pointer would copy a copy-on-write tensor.
ByDType split_grads(const TensorList& grads, const Place& at, const char* op, bool writable) {
  ByDType out;
  for (size_t i = 0; i < grads.size(); ++i) {
    check_place(grads[i], at, "grads", i);
    FO_CHECK(grads[i].is_contiguous() || dense(grads[i]), op, ": grads[", i, "] is neither contiguous nor dense");
    const auto k = static_cast<size_t>(storage_dtype(grads[i], "grads", i));
    out.ptrs[k].push_back(writable ? grads[i].mutable_data_ptr() : const_cast<void*>(grads[i].const_data_ptr()));
    out.numels[k].push_back(grads[i].numel());
  }
  return out;
}

bool any_elements(int n, const int64_t* numels) {
  for (int i = 0; i < n; ++i) {
    if (numels[i] > 0) return true;
  }
  return false;
}

bool any_elements(const std::vector<int64_t>& numels) {
  return any_elements(static_cast<int>(numels.size()), numels.data());
}

}  // namespace

void check_stats_outputs(const Place& at, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
                         const Tensor& sumsq) {
  check_scalar(found_inf, at, ScalarType::Float, "found_inf");
  check_scalar(sumsq, at, ScalarType::Float, "sumsq");
  check_optional_scalar(grad_scale, at, "grad_scale");
}

void run_grad_stats(const Place& at, const std::vector<StatsGroup>& groups, const std::optional<Tensor>& grad_scale,
                    const Tensor& found_inf, const Tensor& sumsq, double max_value, const char* op) {
  int first = -1, last = -1;
  for (int k = 0; k < static_cast<int>(groups.size()); ++k) {
    if (any_elements(groups[k].n, groups[k].numel)) {
      if (first < 0) first = k;
      last = k;
    }
  }
  if (first < 0) return;  // no elements: nothing to add, nothing can be inf
  torch::stable::accelerator::DeviceGuard guard(at.index);
  void* stream = current_stream(at.index);
  // The kernels' partial sums and block counter, allocated per call from torch's
  // allocator on the current stream: cheap (a cached block), ordered with the
  // kernels, and under CUDA-graph capture taken from that graph's own pool, so
  // no two calls, streams or captured graphs ever share one. Freed on return,
  // which the allocator orders after the kernels on this stream.
  const Tensor workspace = torch::stable::new_empty(found_inf, {kWorkspaceDoubles}, ScalarType::Double);
  double* const ws = static_cast<double*>(workspace.mutable_data_ptr());
  for (int k = first; k <= last; ++k) {
    if (!any_elements(groups[k].n, groups[k].numel)) continue;
    StatsLaunch a;
    a.n = groups[k].n;
    a.numel = groups[k].numel;
    a.grad = groups[k].grad;
    a.dtype = groups[k].dtype;
    a.grad_scale = optional_ptr(grad_scale);
    a.found_inf = static_cast<float*>(found_inf.mutable_data_ptr());
    a.sumsq = static_cast<float*>(sumsq.mutable_data_ptr());
    a.workspace = ws;
    a.max_value = math::clamp_bound_of(max_value);
    a.first = k == first;
    a.last = k == last;
    check_launch(launch_grad_stats(a, stream), op);
  }
}

void grad_stats_(
    StableListHandle grads_arg,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    double max_value) {
  const TensorList grads{grads_arg};
  const Place at = place_of(found_inf);
  FO_CHECK(at.cuda, "grad_stats_: found_inf is not a CUDA tensor");
  check_stats_outputs(at, grad_scale, found_inf, sumsq);
  const ByDType g = split_grads(grads, at, "grad_stats_", /*writable=*/false);
  std::vector<StatsGroup> groups;
  for (int k = 0; k < 3; ++k) {
    groups.push_back(StatsGroup{static_cast<int>(g.ptrs[k].size()), g.numels[k].data(),
                                const_cast<const void* const*>(g.ptrs[k].data()), static_cast<DType>(k)});
  }
  run_grad_stats(at, groups, grad_scale, found_inf, sumsq, max_value, "grad_stats_");
}

void unscale_(StableListHandle grads_arg, Tensor found_inf, Tensor inv_scale) {
  const TensorList grads{grads_arg};
  run_unscale(grads, found_inf, inv_scale, "unscale_");
}

void run_unscale(const TensorList& grads, const Tensor& found_inf, const Tensor& inv_scale, const char* op) {
  const Place at = place_of(found_inf);
  FO_CHECK(at.cuda, op, ": found_inf is not a CUDA tensor");
  check_scalar(found_inf, at, ScalarType::Float, "found_inf");
  check_scalar(inv_scale, at, ScalarType::Float, "inv_scale");
  const ByDType g = split_grads(grads, at, op, /*writable=*/true);
  torch::stable::accelerator::DeviceGuard guard(at.index);
  void* stream = current_stream(at.index);
  for (int k = 0; k < 3; ++k) {
    if (!any_elements(g.numels[k])) continue;
    UnscaleLaunch a;
    a.n = static_cast<int>(g.ptrs[k].size());
    a.numel = g.numels[k].data();
    a.grad = g.ptrs[k].data();
    a.dtype = static_cast<DType>(k);
    a.found_inf = static_cast<float*>(found_inf.mutable_data_ptr());
    a.inv_scale = static_cast<const float*>(inv_scale.const_data_ptr());
    check_launch(launch_unscale(a, stream), op);
  }
}

void clip_value_(StableListHandle grads_arg, double clip_value) {
  const TensorList grads{grads_arg};
  if (grads.empty()) return;
  const Place at = place_of(grads[0]);
  FO_CHECK(at.cuda, "clip_value_: grads[0] is not a CUDA tensor");
  const ByDType g = split_grads(grads, at, "clip_value_", /*writable=*/true);
  torch::stable::accelerator::DeviceGuard guard(at.index);
  void* stream = current_stream(at.index);
  const float c = static_cast<float>(clip_value);
  for (int k = 0; k < 3; ++k) {
    if (!any_elements(g.numels[k])) continue;
    ClampLaunch a;
    a.n = static_cast<int>(g.ptrs[k].size());
    a.numel = g.numels[k].data();
    a.grad = g.ptrs[k].data();
    a.dtype = static_cast<DType>(k);
    a.lo = -c;
    a.hi = c;
    check_launch(launch_clamp(a, stream), "clip_value_");
  }
}

}  // namespace cuda
}  // namespace fusedopt
