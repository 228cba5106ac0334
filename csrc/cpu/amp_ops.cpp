// fusedopt::grad_stats_ and fusedopt::unscale_ on the CPU: the one-read pass
// that yields found_inf and the global sum of squares, and GradScaler.unscale_.
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../math/clip.h"
#include "../tensor_checks.h"
#include "calls.h"
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "scalars.h"

namespace fusedopt {
namespace cpu {
namespace {

// Grads may mix dtypes within one call; each must be a dense CPU tensor.
// `writable`: unscale_ writes the grads; grad_stats_ only reads them, and asking
// for a mutable pointer would copy a copy-on-write tensor.
template <class Ptr>
Grads<Ptr> read_grads(const TensorList& grads, const char* op) {
  Grads<Ptr> g;
  g.dtypes.reserve(grads.size());
  g.data.reserve(grads.size());
  g.numels.reserve(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const TensorRef t = grads[i];
    FO_CHECK(t.is_cpu(), op, ": grads[", i, "] is not a CPU tensor");
    FO_CHECK(t.is_contiguous() || dense(t), op, ": grads[", i, "] is neither contiguous nor dense");
    g.dtypes.push_back(storage_dtype(t, "grads", i));
    // grad_stats_ only reads the grads: asking for a mutable pointer would copy
    // a copy-on-write tensor
    if constexpr (std::is_const_v<std::remove_pointer_t<Ptr>>) {
      g.data.push_back(t.const_data_ptr());
    } else {
      g.data.push_back(t.mutable_data_ptr());
    }
    g.numels.push_back(t.numel());
    g.total += g.numels.back();
  }
  return g;
}

void check_found_inf(const Tensor& found_inf, const char* op) {
  FO_CHECK(found_inf.numel() == 1 && found_inf.scalar_type() == ScalarType::Float && found_inf.is_cpu(),
           op, ": found_inf must be a one-element float32 CPU tensor");
}

}  // namespace

void check_stats_outputs(const std::optional<Tensor>& grad_scale, const Tensor& found_inf, const Tensor& sumsq,
                         const char* op) {
  check_found_inf(found_inf, op);
  FO_CHECK(sumsq.numel() == 1 && sumsq.scalar_type() == ScalarType::Float && sumsq.is_cpu(),
           op, ": sumsq must be a one-element float32 CPU tensor");
  check_optional_scalar(grad_scale, Place{false, -1}, "grad_scale");
}

void grad_stats_(
    StableListHandle grads_arg,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    double max_value) {
  const TensorList grads{grads_arg};
  const GradList g = read_grads<const void*>(grads, "grad_stats_");
  check_stats_outputs(grad_scale, found_inf, sumsq, "grad_stats_");
  run_grad_stats(g, grad_scale, found_inf, sumsq, max_value);
}

void run_grad_stats(const GradList& g, const std::optional<Tensor>& grad_scale, const Tensor& found_inf,
                    const Tensor& sumsq, double max_value) {
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

void unscale_(StableListHandle grads_arg, Tensor found_inf, Tensor inv_scale) {
  const TensorList grads{grads_arg};
  run_unscale(grads, found_inf, inv_scale, "unscale_");
}

void run_unscale(const TensorList& grads, const Tensor& found_inf, const Tensor& inv_scale, const char* op) {
  const Grads<void*> g = read_grads<void*>(grads, op);
  check_found_inf(found_inf, op);
  FO_CHECK(inv_scale.numel() == 1 && inv_scale.scalar_type() == ScalarType::Float && inv_scale.is_cpu(),
           op, ": inv_scale must be a one-element float32 CPU tensor");
  const float inv = *static_cast<const float*>(inv_scale.data_ptr());

  const KernelTable& k = active_kernels();
  std::atomic<bool> any_bad{false};
  for_each_share(g.numels, [&](int64_t t, int64_t lo, int64_t hi) {
    if (k.unscale(g.dtypes[t])(g.data[t], inv, lo, hi)) any_bad.store(true, std::memory_order_relaxed);
  });
  if (any_bad.load()) *static_cast<float*>(found_inf.mutable_data_ptr()) = 1.0f;
}

void clip_value_(StableListHandle grads_arg, double clip_value) {
  const TensorList grads{grads_arg};
  const Grads<void*> g = read_grads<void*>(grads, "clip_value_");
  const float c = static_cast<float>(clip_value);
  const KernelTable& k = active_kernels();
  for_each_share(g.numels, [&](int64_t t, int64_t lo, int64_t hi) { k.clamp(g.dtypes[t])(g.data[t], -c, c, lo, hi); });
}

}  // namespace cpu
}  // namespace fusedopt
