// Multi-tensor SGD on CUDA (momentum, dampening, nesterov, L2 decay), with
// unscale, clip and skip-on-inf in the same pass.
#include <type_traits>

#include "../math/sgd.h"
#include "kernel_common.cuh"

namespace fusedopt {
namespace cuda {
namespace {

// Lists: 0 param, 1 grad, 2 momentum_buffer, 3 master. Scalar: momentum_first.
using SgdTable = ChunkTable<4>;

template <class P, class G, class S, bool kMomentum, bool kMaster>
__global__ void __launch_bounds__(kThreads) sgd_kernel(
    const SgdTable table,
    const double momentum,
    const double dampening,
    const double weight_decay,
    const bool nesterov,
    const StepControl ctl) {
  if (skip_step(ctl.found_inf)) return;
  const ChunkSpan s = chunk_span(table);
  __shared__ math::SgdConsts shared_c;
  __shared__ math::GradFactors shared_f;
  __shared__ bool shared_first;
  if (threadIdx.x == 0) {
    shared_c = math::sgd_consts(lr_of(ctl), momentum, dampening, weight_decay, nesterov);
    shared_f = factors_of(ctl);
    // cleared by the launch after this one, once every block has read it
    shared_first = kMomentum && *static_cast<const bool*>(table.scalar[s.tensor]);
  }
  __syncthreads();
  const math::SgdConsts c = shared_c;
  const math::GradFactors f = shared_f;
  const bool first = shared_first;

  P* p = static_cast<P*>(table.ptr[0][s.tensor]) + s.start;
  const G* g = static_cast<const G*>(table.ptr[1][s.tensor]) + s.start;
  S* b = kMomentum ? static_cast<S*>(table.ptr[2][s.tensor]) + s.start : nullptr;
  float* w = kMaster ? static_cast<float*>(table.ptr[3][s.tensor]) + s.start : nullptr;
  const bool aligned = pack_aligned(p) && pack_aligned(g) && pack_aligned(b) && pack_aligned(w);

  for_chunk(s.n, aligned, [&](int i, bool pack) {
    const int width = pack ? kILP : 1;
    float pv[kILP], gv[kILP], bv[kILP] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (kMaster) load_elems(pv, w, i, pack); else load_elems(pv, p, i, pack);
    load_elems(gv, g, i, pack);
    if (kMomentum && !first) load_elems(bv, b, i, pack);
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (k < width) math::sgd_update(pv[k], math::grad_prep(gv[k], f), bv[k], first, c);
    }
    store_elems(p, i, pv, pack);
    if (kMaster) store_elems(w, i, pv, pack);
    if (kMomentum) store_elems(b, i, bv, pack);
  });
}

template <class P, class G, class S, bool kMomentum, bool kMaster>
const char* run(const SgdLaunch& a, cudaStream_t stream) {
  const char* err = nullptr;
  const TensorLists& t = a.t;
  for_each_table<4>(
      t.n, t.numel,
      [&](int l, int i) -> void* {
        switch (l) {
          case 0: return t.param[i];
          case 1: return const_cast<void*>(t.grad[i]);
          case 2: return kMomentum ? t.state0[i] : nullptr;
          default: return kMaster ? static_cast<void*>(t.master[i]) : nullptr;
        }
      },
      [&](int i) { return kMomentum ? t.scalar[i] : nullptr; },
      [&](const SgdTable& table, int blocks) {
        if (err) return;
        err = launch_kernel(sgd_kernel<P, G, S, kMomentum, kMaster>, blocks, kThreads, stream, table, a.momentum,
                            a.dampening, a.weight_decay, a.nesterov, a.ctl);
      });
  return err;
}

template <class P, class G, class S>
const char* pick_flags(const SgdLaunch& a, cudaStream_t stream) {
  constexpr bool kLow = !std::is_same<P, float>::value;
  if (a.master && kLow) {
    return a.has_momentum ? run<P, G, S, true, kLow>(a, stream) : run<P, G, S, false, kLow>(a, stream);
  }
  return a.has_momentum ? run<P, G, S, true, false>(a, stream) : run<P, G, S, false, false>(a, stream);
}

}  // namespace

const char* launch_sgd(const SgdLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  const char* err = nullptr;
  const bool ok = dispatch_param_grad_state(a.param_dtype, a.grad_dtype, a.state_dtype, [&](auto p, auto g, auto s) {
    err = pick_flags<decltype(p), decltype(g), decltype(s)>(a, stream);
  });
  if (!ok) return "unsupported dtype combination";
  if (err == nullptr && a.has_momentum) err = advance_scalars(a.t, a.ctl.found_inf, ScalarOp::kClearBool, stream);
  return err;
}

}  // namespace cuda
}  // namespace fusedopt
