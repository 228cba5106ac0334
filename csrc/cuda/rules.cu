// Every rule's multi-tensor update on CUDA (csrc/rules/, registry.h): unscale,
// clip, skip-on-inf and the rule's update in one pass over params, grads and
// states. Written once; instantiated for each rule at the end.
#include <type_traits>

#include "../codecs.h"
#include "kernel_common.cuh"

namespace fusedopt {
namespace cuda {
namespace {

// Occupancy. An SM holds 64K registers, so a 512-thread block fits 4 times per
// SM at <= 32 registers a thread, 3 times at <= 40, twice at <= 64. With
// __launch_bounds__(512) alone, ptxas (CUDA 13.0, `nvcc --resource-usage`) gave
// the Adam kernels 37-40 registers for sm_80 but 36-45 for sm_90, the common
// fp32 AdamW one 42: 2 blocks (50% occupancy) on an H100/H200 where 3 fit if it
// kept to 40. Asking for 3 blocks per SM caps every instantiation at 40
// registers on both architectures with no spills (fp32 AdamW: 40); asking for 4
// (32 registers) makes the fp32 kernels spill. So 3 it is, for every rule (the
// others need fewer registers than Adam). The gain to expect is modest: at 2
// blocks an SM already has 64 KiB of fp32 AdamW loads in flight (96 KiB at 3),
// more than HBM3e's bandwidth x latency asks of it (~25 KiB); the third block
// mostly hides each block's prologue (thread 0 derives the constants in fp64
// while the others wait), which counts on sets of many small tensors. Not yet
// measured on a GPU: bench/gpu_session.sh times both when ADAM_BOUNDS_AB=1
// (-DFUSEDOPT_ADAM_MIN_BLOCKS=0 builds the __launch_bounds__(512)-only variant).
#ifndef FUSEDOPT_ADAM_MIN_BLOCKS
#define FUSEDOPT_ADAM_MIN_BLOCKS 3
#endif
#if FUSEDOPT_ADAM_MIN_BLOCKS > 0
#define FO_RULE_LAUNCH_BOUNDS __launch_bounds__(kThreads, FUSEDOPT_ADAM_MIN_BLOCKS)
#else
#define FO_RULE_LAUNCH_BOUNDS __launch_bounds__(kThreads)
#endif

// Lists: 0 param, 1 grad, 2 .. 2 + kStates - 1 the states, then the master.
template <class Rule>
constexpr int kLists = 3 + Rule::kStates;

template <class Rule>
using RuleTable = ChunkTable<kLists<Rule>>;

template <class Rule, class P, class G, class S, int kActive, bool kMaster>
__global__ void FO_RULE_LAUNCH_BOUNDS rule_kernel(const RuleTable<Rule> table, const typename Rule::Hyper hyper,
                                                  const double* hyper_ptr, const StepControl ctl) {
  static_assert(S::kBlock == 1, "blockwise codecs walk whole blocks: a loop of their own (csrc/codecs.h)");
  using T = typename S::Storage;
  constexpr int kS = Rule::kStates;
  if (skip_step(ctl.found_inf)) return;
  const ChunkSpan s = chunk_span(table);
  // One thread derives the tensor's constants (Adam: double-precision pow) for
  // all, from the counter as this update sees it; the counters themselves
  // advance after every block of every launch has read them.
  __shared__ typename Rule::Consts shared_c;
  __shared__ math::GradFactors shared_f;
  if (threadIdx.x == 0) {
    const typename Rule::Hyper h = hyper_ptr != nullptr ? Rule::unpack(hyper_ptr) : hyper;
    const LrArg lr{lr_of(ctl), ctl.lr_ptr != nullptr && !ctl.lr_is_double};
    shared_c = Rule::consts(h, lr, counter_value<Rule>(table.scalar[s.tensor]));
    shared_f = factors_of(ctl);
  }
  __syncthreads();
  const typename Rule::Consts c = shared_c;
  const math::GradFactors f = shared_f;

  P* p = static_cast<P*>(table.ptr[0][s.tensor]) + s.start;
  const G* g = static_cast<const G*>(table.ptr[1][s.tensor]) + s.start;
  T* st[kS];
  bool aligned = pack_aligned(p) && pack_aligned(g);
#pragma unroll
  for (int k = 0; k < kS; ++k) {
    st[k] = k < kActive ? static_cast<T*>(table.ptr[2 + k][s.tensor]) + s.start : nullptr;
    aligned = aligned && pack_aligned(st[k]);
  }
  float* w = kMaster ? static_cast<float*>(table.ptr[2 + kS][s.tensor]) + s.start : nullptr;
  aligned = aligned && pack_aligned(w);

  for_chunk(s.n, aligned, [&](int i, bool pack) {
    const int width = pack ? kILP : 1;
    float pv[kILP], gv[kILP], sv[kS][kILP];
    if (kMaster) load_elems(pv, w, i, pack); else load_elems(pv, p, i, pack);
    load_elems(gv, g, i, pack);
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (k < kActive) {
        load_elems(sv[k], st[k], i, pack);
      } else {
#pragma unroll
        for (int e = 0; e < kILP; ++e) sv[k][e] = 0.0f;
      }
    }
#pragma unroll
    for (int e = 0; e < kILP; ++e) {
      if (e < width) {
        float se[kS];
#pragma unroll
        for (int k = 0; k < kS; ++k) se[k] = sv[k][e];
        Rule::template update<kActive>(pv[e], math::grad_prep(gv[e], f), se, c);
#pragma unroll
        for (int k = 0; k < kS; ++k) sv[k][e] = se[k];
      }
    }
    store_elems(p, i, pv, pack);
    if (kMaster) store_elems(w, i, pv, pack);
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (k < kActive) store_elems(st[k], i, sv[k], pack);
    }
  });
}

template <class Rule, class P, class G, class S, int kActive, bool kMaster>
const char* run(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  constexpr int kS = Rule::kStates;
  const char* err = nullptr;
  const TensorLists& t = a.t;
  for_each_table<kLists<Rule>>(
      t.n, t.numel,
      [&](int l, int i) -> void* {
        if (l == 0) return t.param[i];
        if (l == 1) return const_cast<void*>(t.grad[i]);
        if (l < 2 + kS) return l - 2 < kActive ? t.state[l - 2][i] : nullptr;
        return kMaster ? static_cast<void*>(t.master[i]) : nullptr;
      },
      [&](int i) { return t.scalar != nullptr ? t.scalar[i] : nullptr; },
      [&](const RuleTable<Rule>& table, int blocks) {
        if (err) return;
        err = launch_kernel(rule_kernel<Rule, P, G, S, kActive, kMaster>, blocks, kThreads, stream, table, a.hyper,
                            a.hyper_ptr, a.ctl);
      });
  return err;
}

template <class Rule, class P, class G, class S, bool kMaster, int kActive = Rule::kMinStates>
const char* pick_active(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  if (a.active == kActive) return run<Rule, P, G, S, kActive, kMaster>(a, stream);
  if constexpr (kActive < Rule::kStates) {
    return pick_active<Rule, P, G, S, kMaster, kActive + 1>(a, stream);
  } else {
    return "no kernel for this number of state lists";
  }
}

template <class Rule, class P, class G, class S>
const char* pick_master(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  // fp32 params have no master copy (the entry point refuses one)
  constexpr bool kLow = !std::is_same<P, float>::value;
  if (a.master && kLow) return pick_active<Rule, P, G, S, kLow>(a, stream);
  return pick_active<Rule, P, G, S, false>(a, stream);
}

}  // namespace

template <class Rule>
const char* launch_rule(const RuleLaunch<Rule>& a, void* raw_stream) {
  static_assert(Rule::kStates <= kMaxStates, "raise cuda::kMaxStates");
  auto stream = static_cast<cudaStream_t>(raw_stream);
  const char* err = nullptr;
  const bool ok = dispatch_param_grad_state(a.param_dtype, a.grad_dtype, a.state_dtype, [&](auto p, auto g, auto s) {
    err = pick_master<Rule, decltype(p), decltype(g), PlainCodec<decltype(s)>>(a, stream);
  });
  if (!ok) return "unsupported dtype combination";
  if (err != nullptr) return err;
  if constexpr (Rule::kCounter == Counter::kStepF32) {
    return advance_scalars(a.t, a.ctl.found_inf, ScalarOp::kIncrementFloat, stream);
  } else if constexpr (Rule::kCounter == Counter::kFirstBool) {
    return a.active > 0 ? advance_scalars(a.t, a.ctl.found_inf, ScalarOp::kClearBool, stream) : nullptr;
  }
  return nullptr;
}

#define FO_RULE_LAUNCH(name, Rule) template const char* launch_rule<Rule>(const RuleLaunch<Rule>&, void*);
FUSEDOPT_RULES(FO_RULE_LAUNCH)
#undef FO_RULE_LAUNCH

}  // namespace cuda
}  // namespace fusedopt
