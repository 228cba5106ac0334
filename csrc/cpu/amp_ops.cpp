// fusedopt::grad_stats_ and fusedopt::unscale_ on the CPU: the one-read pass
// that yields found_inf and the global sum of squares, and GradScaler.unscale_.
#include <atomic>
#include <cmath>
#include <vector>

#include "../math/clip.h"
#include "../tensor_checks.h"
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {
namespace {

struct GradList {
  std::vector<void*> data;
  std::vector<DType> dtypes;
  std::vector<int64_t> numels;
  int64_t total = 0;
};

// Grads may mix dtypes within one call; each must be a dense CPU tensor.
// `writable`: unscale_ writes the grads; grad_stats_ only reads them, and asking
// for a mutable pointer would copy a copy-on-write tensor.
GradList read_grads(const TensorList& grads, const Tensor& found_inf, const char* op, bool writable) {
  GradList g;
  for (size_t i = 0; i < grads.size(); ++i) {
    FO_CHECK(grads[i].is_cpu(), op, ": grads[", i, "] is not a CPU tensor");
    FO_CHECK(grads[i].is_contiguous() || dense(grads[i]), op, ": grads[", i, "] is neither contiguous nor dense");
    g.dtypes.push_back(storage_dtype(grads[i], "grads", i));
    g.data.push_back(writable ? grads[i].mutable_data_ptr() : const_cast<void*>(grads[i].const_data_ptr()));
    g.numels.push_back(grads[i].numel());
    g.total += grads[i].numel();
  }
  FO_CHECK(found_inf.numel() == 1 && found_inf.scalar_type() == ScalarType::Float && found_inf.is_cpu(),
           op, ": found_inf must be a one-element float32 CPU tensor");
  return g;
}

}  // namespace

void grad_stats_(
    const TensorList& grads,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    double max_value) {
  const GradList g = read_grads(grads, found_inf, "grad_stats_", /*writable=*/false);
  FO_CHECK(sumsq.numel() == 1 && sumsq.scalar_type() == ScalarType::Float && sumsq.is_cpu(),
           "grad_stats_: sumsq must be a one-element float32 CPU tensor");
  check_optional_scalar(grad_scale, Place{false, -1}, "grad_scale");
  const float inv = grad_scale.has_value() ? math::inv_scale_of(*scalar_ptr(grad_scale)) : 1.0f;
  const float bound = math::clamp_bound_of(max_value);

  const KernelTable& k = active_kernels();
  const std::vector<Block> blocks = fixed_blocks(g.numels);
  std::vector<double> partial(blocks.size(), 0.0);
  std::atomic<bool> any_bad{false};
  for_each_block(blocks, g.total, [&](int64_t b) {
    const Block& blk = blocks[b];
    bool bad = false;
    partial[b] = k.sumsq(g.dtypes[blk.tensor])(g.data[blk.tensor], inv, bound, blk.lo, blk.hi, &bad);
    if (bad) any_bad.store(true, std::memory_order_relaxed);
  });
  // Blocks are added in their fixed order: the sum does not depend on the threads.
  double total = 0.0;
  for (double p : partial) total += p;

  float* out = static_cast<float*>(sumsq.mutable_data_ptr());
  *out = static_cast<float>(static_cast<double>(*out) + total);
  if (any_bad.load() || !std::isfinite(total)) *static_cast<float*>(found_inf.mutable_data_ptr()) = 1.0f;
}

void unscale_(const TensorList& grads, Tensor found_inf, Tensor inv_scale) {
  const GradList g = read_grads(grads, found_inf, "unscale_", /*writable=*/true);
  FO_CHECK(inv_scale.numel() == 1 && inv_scale.scalar_type() == ScalarType::Float && inv_scale.is_cpu(),
           "unscale_: inv_scale must be a one-element float32 CPU tensor");
  const float inv = *static_cast<const float*>(inv_scale.data_ptr());

  const KernelTable& k = active_kernels();
  std::atomic<bool> any_bad{false};
  for_each_share(g.numels, [&](int64_t t, int64_t lo, int64_t hi) {
    if (k.unscale(g.dtypes[t])(g.data[t], inv, lo, hi)) any_bad.store(true, std::memory_order_relaxed);
  });
  if (any_bad.load()) *static_cast<float*>(found_inf.mutable_data_ptr()) = 1.0f;
}

void clip_value_(const TensorList& grads, double clip_value) {
  GradList g;
  for (size_t i = 0; i < grads.size(); ++i) {
    FO_CHECK(grads[i].is_cpu(), "clip_value_: grads[", i, "] is not a CPU tensor");
    FO_CHECK(grads[i].is_contiguous() || dense(grads[i]), "clip_value_: grads[", i,
             "] is neither contiguous nor dense");
    g.dtypes.push_back(storage_dtype(grads[i], "grads", i));
    g.data.push_back(grads[i].mutable_data_ptr());
    g.numels.push_back(grads[i].numel());
  }
  const float c = static_cast<float>(clip_value);
  const KernelTable& k = active_kernels();
  for_each_share(g.numels, [&](int64_t t, int64_t lo, int64_t hi) { k.clamp(g.dtypes[t])(g.data[t], -c, c, lo, hi); });
}

}  // namespace cpu
}  // namespace fusedopt
