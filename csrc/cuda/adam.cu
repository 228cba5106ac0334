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

template <class P, class G, class S, bool kAmsgrad, bool kMaster>
__global__ void __launch_bounds__(kThreads)
    adam_kernel(const AdamTable table, const math::AdamHyper hyper, const StepControl ctl) {
  if (skip_step(ctl.found_inf)) return;
  const ChunkSpan s = chunk_span(table);
  // One thread derives the tensor's constants (double-precision pow) for all.
  // The step counter was advanced by the launch before this one.
  __shared__ math::AdamConsts shared_c;
  __shared__ math::GradFactors shared_f;
  if (threadIdx.x == 0) {
    shared_c = math::adam_consts(hyper, lr_of(ctl), *static_cast<const float*>(table.scalar[s.tensor]));
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
    if (pack) {
      if (kMaster) load_pack(pv, w + i); else load_pack(pv, p + i);
      load_pack(gv, g + i);
      load_pack(mv, m + i);
      load_pack(vv, v + i);
      if (kAmsgrad) load_pack(vmv, vm + i);
    } else {
      pv[0] = kMaster ? w[i] : to_float(p[i]);
      gv[0] = to_float(g[i]);
      mv[0] = to_float(m[i]);
      vv[0] = to_float(v[i]);
      if (kAmsgrad) vmv[0] = to_float(vm[i]);
    }
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (k < width) {
        math::adam_update<kAmsgrad>(pv[k], math::grad_prep(gv[k], f), mv[k], vv[k], vmv[k], c);
      }
    }
    if (pack) {
      store_pack(p + i, pv);
      if (kMaster) store_pack(w + i, pv);
      store_pack(m + i, mv);
      store_pack(v + i, vv);
      if (kAmsgrad) store_pack(vm + i, vmv);
    } else {
      p[i] = from_float<P>(pv[0]);
      if (kMaster) w[i] = pv[0];
      m[i] = from_float<S>(mv[0]);
      v[i] = from_float<S>(vv[0]);
      if (kAmsgrad) vm[i] = from_float<S>(vmv[0]);
    }
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
        adam_kernel<P, G, S, kAmsgrad, kMaster><<<blocks, kThreads, 0, stream>>>(table, a.hyper, a.ctl);
        err = last_error();
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
  if (const char* err = advance_scalars(a.t, a.ctl.found_inf, ScalarOp::kIncrementFloat, stream)) return err;
  const char* err = "unsupported dtype combination";
  dispatch_dtype(a.param_dtype, [&](auto p) {
    using P = decltype(p);
    dispatch_dtype(a.state_dtype, [&](auto s) {
      using S = decltype(s);
      if (a.grad_dtype == a.param_dtype) {
        err = pick_flags<P, P, S>(a, stream);
      } else if (a.grad_dtype == DType::F32) {
        err = pick_flags<P, float, S>(a, stream);
      }
    });
  });
  return err;
}

}  // namespace cuda
}  // namespace fusedopt
