// Multi-tensor Adam/AdamW on CUDA: unscale, clip, skip-on-inf and the update in
// one pass over params, grads and states.
#include <type_traits>

#include "../math/adam.h"
#include "kernel_common.cuh"

namespace fusedopt {
namespace cuda {
namespace {

// Lists: 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 max_exp_avg_sq, 5 master.
using AdamTable = ChunkTable<6>;

// Occupancy. An SM holds 64K registers, so a 512-thread block of this kernel
// fits 4 times per SM at <= 32 registers a thread, 3 times at <= 40, twice at
// <= 64. With __launch_bounds__(512) alone, ptxas (CUDA 13.0, `nvcc
// --resource-usage`) gave the Adam kernels 37-40 registers for sm_80 but 36-45
// for sm_90, the common fp32 AdamW one 42: 2 blocks (50% occupancy) on an
// H100/H200 where 3 fit if it kept to 40. Asking for 3 blocks per SM caps every
// instantiation at 40 registers on both architectures with no spills (fp32 AdamW:
// 40); asking for 4 (32 registers) makes the fp32 kernels spill. So 3 it is.
// The gain to expect is modest: at 2 blocks an SM already has 64 KiB of fp32
// AdamW loads in flight (96 KiB at 3), more than HBM3e's bandwidth x latency
// asks of it (~25 KiB); the third block mostly hides each block's prologue
// (thread 0 derives the constants in fp64 while the others wait), which counts
// on sets of many small tensors. Not yet measured on a GPU: bench/gpu_session.sh
// times both when ADAM_BOUNDS_AB=1 (-DFUSEDOPT_ADAM_MIN_BLOCKS=0 builds the
// __launch_bounds__(512)-only variant).
#ifndef FUSEDOPT_ADAM_MIN_BLOCKS
#define FUSEDOPT_ADAM_MIN_BLOCKS 3
#endif
#if FUSEDOPT_ADAM_MIN_BLOCKS > 0
#define FO_ADAM_LAUNCH_BOUNDS __launch_bounds__(kThreads, FUSEDOPT_ADAM_MIN_BLOCKS)
#else
#define FO_ADAM_LAUNCH_BOUNDS __launch_bounds__(kThreads)
#endif

template <class P, class G, class S, bool kAmsgrad, bool kMaster>
__global__ void FO_ADAM_LAUNCH_BOUNDS
    adam_kernel(const AdamTable table, const math::AdamHyper hyper, const StepControl ctl) {
  if (skip_step(ctl.found_inf)) return;
  const ChunkSpan s = chunk_span(table);
  // One thread derives the tensor's constants (double-precision pow) for all,
  // from the step this update completes; the counters themselves advance after
  // every block of every launch has read them.
  __shared__ math::AdamConsts shared_c;
  __shared__ math::GradFactors shared_f;
  if (threadIdx.x == 0) {
    const bool lr_f32 = ctl.lr_ptr != nullptr && !ctl.lr_is_double;
    shared_c = math::adam_consts(hyper, lr_of(ctl), lr_f32, *static_cast<const float*>(table.scalar[s.tensor]) + 1.0f);
    shared_f = factors_of(ctl);
  }
  __syncthreads();
  const math::AdamConsts c = shared_c;
  const math::GradFactors f = shared_f;

  P* p = static_cast<P*>(table.ptr[0][s.tensor]) + s.start;
  const G* g = static_cast<const G*>(table.ptr[1][s.tensor]) + s.start;
  S* m = static_cast<S*>(table.ptr[2][s.tensor]) + s.start;
  S* v = static_cast<S*>(table.ptr[3][s.tensor]) + s.start;
  S* vm = kAmsgrad ? static_cast<S*>(table.ptr[4][s.tensor]) + s.start : nullptr;
  float* w = kMaster ? static_cast<float*>(table.ptr[5][s.tensor]) + s.start : nullptr;
  const bool aligned =
      pack_aligned(p) && pack_aligned(g) && pack_aligned(m) && pack_aligned(v) && pack_aligned(vm) && pack_aligned(w);

  for_chunk(s.n, aligned, [&](int i, bool pack) {
    const int width = pack ? kILP : 1;
    float pv[kILP], gv[kILP], mv[kILP], vv[kILP], vmv[kILP];
    if (kMaster) load_elems(pv, w, i, pack); else load_elems(pv, p, i, pack);
    load_elems(gv, g, i, pack);
    load_elems(mv, m, i, pack);
    load_elems(vv, v, i, pack);
    if (kAmsgrad) load_elems(vmv, vm, i, pack);
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (k < width) {
        math::adam_update<kAmsgrad>(pv[k], math::grad_prep(gv[k], f), mv[k], vv[k], vmv[k], c);
      }
    }
    store_elems(p, i, pv, pack);
    if (kMaster) store_elems(w, i, pv, pack);
    store_elems(m, i, mv, pack);
    store_elems(v, i, vv, pack);
    if (kAmsgrad) store_elems(vm, i, vmv, pack);
  });
}

template <class P, class G, class S, bool kAmsgrad, bool kMaster>
const char* run(const AdamLaunch& a, cudaStream_t stream) {
  const char* err = nullptr;
  const TensorLists& t = a.t;
  for_each_table<6>(
      t.n, t.numel,
      [&](int l, int i) -> void* {
        switch (l) {
          case 0: return t.param[i];
          case 1: return const_cast<void*>(t.grad[i]);
          case 2: return t.state0[i];
          case 3: return t.state1[i];
          case 4: return kAmsgrad ? t.state2[i] : nullptr;
          default: return kMaster ? static_cast<void*>(t.master[i]) : nullptr;
        }
      },
      [&](int i) { return t.scalar[i]; },
      [&](const AdamTable& table, int blocks) {
        if (err) return;
        err = launch_kernel(adam_kernel<P, G, S, kAmsgrad, kMaster>, blocks, kThreads, stream, table, a.hyper, a.ctl);
      });
  return err;
}

template <class P, class G, class S>
const char* pick_flags(const AdamLaunch& a, cudaStream_t stream) {
  // fp32 params have no master copy (the entry point refuses one)
  constexpr bool kLow = !std::is_same<P, float>::value;
  if (a.master && kLow) {
    return a.amsgrad ? run<P, G, S, true, kLow>(a, stream) : run<P, G, S, false, kLow>(a, stream);
  }
  return a.amsgrad ? run<P, G, S, true, false>(a, stream) : run<P, G, S, false, false>(a, stream);
}

}  // namespace

const char* launch_adam(const AdamLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  const char* err = nullptr;
  const bool ok = dispatch_param_grad_state(a.param_dtype, a.grad_dtype, a.state_dtype, [&](auto p, auto g, auto s) {
    err = pick_flags<decltype(p), decltype(g), decltype(s)>(a, stream);
  });
  if (!ok) return "unsupported dtype combination";
  if (err == nullptr) err = advance_scalars(a.t, a.ctl.found_inf, ScalarOp::kIncrementFloat, stream);
  return err;
}

}  // namespace cuda
}  // namespace fusedopt
