// Every rule's multi-tensor update on CUDA (csrc/rules/, registry.h): unscale,
// clip, skip-on-inf and the rule's update in one pass over params, grads and
// states. Written once; instantiated for each rule at the end.
#include <type_traits>

#include "../codecs.h"
#include "kernel_common.cuh"
#include "rounded_store.cuh"
#include "rule_kernel_q8.cuh"
#include "tensor_setup.cuh"

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

// Lists: 0 param, 1 grad, 2 .. 2 + kStates - 1 the states, then the master or,
// with stochastic rounding (which takes no master: op_args.h), the rounding
// key; the table's offsets are the keys' element offsets then.
template <class Rule>
constexpr int kLists = 3 + Rule::kStates;

template <class Rule, bool kStochastic>
using RuleTable = ChunkTable<kLists<Rule>, kStochastic>;

template <class Rule, class P, class G, class S, int kActive, bool kMaster, bool kStochastic>
__global__ void FO_RULE_LAUNCH_BOUNDS rule_kernel(const RuleTable<Rule, kStochastic> table,
                                                  const typename Rule::Hyper hyper, const double* hyper_ptr,
                                                  const StepControl ctl) {
  static_assert(S::kBlock == 1, "blockwise codecs walk whole blocks: a loop of their own (csrc/codecs.h)");
  using T = typename S::Storage;
  constexpr int kS = Rule::kStates;
  if (skip_step(ctl.found_inf)) return;
  const ChunkSpan s = chunk_span(table);
  __shared__ typename Rule::Consts shared_c;
  __shared__ math::GradFactors shared_f;
  setup_tensor<Rule, kStochastic>(table, s, hyper, hyper_ptr, ctl, shared_c, shared_f);
  __syncthreads();
  const typename Rule::Consts c = shared_c;
  const math::GradFactors f = shared_f;
  RoundKey round_key{0, 0, 0};
  if (kStochastic) round_key = shared_key;

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
    if constexpr (kStochastic) {
      store_rounded_elems(p, i, pv, pack, round_key);
    } else {
      store_elems(p, i, pv, pack);
    }
    if (kMaster) store_elems(w, i, pv, pack);
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (k < kActive) store_elems(st[k], i, sv[k], pack);
    }
  });
}

template <class Rule, class P, class G, class S, int kActive, bool kMaster, bool kStochastic>
const char* run_plain(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  constexpr int kS = Rule::kStates;
  const char* err = nullptr;
  const TensorLists& t = a.t;
  for_each_table<kLists<Rule>, kStochastic>(
      t.n, t.numel,
      [&](int l, int i) -> void* {
        if (l == 0) return t.param[i];
        if (l == 1) return const_cast<void*>(t.grad[i]);
        if (l < 2 + kS) return l - 2 < kActive ? t.state[l - 2][i] : nullptr;
        if (kStochastic) return t.rounding_key[i];
        return kMaster ? static_cast<void*>(t.master[i]) : nullptr;
      },
      [&](int i) { return t.scalar != nullptr ? t.scalar[i] : nullptr; },
      [&](const RuleTable<Rule, kStochastic>& table, int blocks) {
        if (err) return;
        err = launch_kernel(rule_kernel<Rule, P, G, S, kActive, kMaster, kStochastic>, blocks, kThreads, stream,
                            table, a.hyper, a.hyper_ptr, a.ctl);
      },
      [&](int i) { return kStochastic ? t.rounding_offset[i] : int64_t{0}; });
  return err;
}

// 8-bit states (rule_kernel_q8.cuh): the lists of run_plain() plus each state's absmax.
template <class Rule, class P, class G, int kActive, bool kMaster, bool kStochastic>
const char* run_q8(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  constexpr int kS = Rule::kStates;
  const char* err = nullptr;
  const TensorLists& t = a.t;
  for_each_table<kQ8Lists<Rule>, kStochastic, kQ8Tensors>(
      t.n, t.numel,
      [&](int l, int i) -> void* {
        if (l == 0) return t.param[i];
        if (l == 1) return const_cast<void*>(t.grad[i]);
        if (l < 2 + kS) return l - 2 < kActive ? t.state[l - 2][i] : nullptr;
        if (l == 2 + kS) {
          if (kStochastic) return t.rounding_key[i];
          return kMaster ? static_cast<void*>(t.master[i]) : nullptr;
        }
        return l - 3 - kS < kActive ? static_cast<void*>(t.absmax[l - 3 - kS][i]) : nullptr;
      },
      [&](int i) { return t.scalar != nullptr ? t.scalar[i] : nullptr; },
      [&](const Q8Table<Rule, kStochastic>& table, int blocks) {
        if (err) return;
        err = launch_kernel(rule_kernel_q8<Rule, P, G, kActive, kMaster, kStochastic>, blocks, kThreads, stream,
                            table, a.hyper, a.hyper_ptr, a.ctl);
      },
      [&](int i) { return kStochastic ? t.rounding_offset[i] : int64_t{0}; });
  return err;
}

template <class Rule, class P, class G, class S, int kActive, bool kMaster, bool kStochastic>
const char* run(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  if constexpr (S::kBlock > 1) {
    static_assert(std::is_same<S, Quant8Codec>::value, "the one blockwise codec");
    if constexpr (kActive > 0) {
      return run_q8<Rule, P, G, kActive, kMaster, kStochastic>(a, stream);
    } else {
      return "8-bit states need a state list";
    }
  } else {
    return run_plain<Rule, P, G, S, kActive, kMaster, kStochastic>(a, stream);
  }
}

template <class Rule, class P, class G, class S, bool kMaster, bool kStochastic, int kActive = Rule::kMinStates>
const char* pick_active(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  if (a.active == kActive) return run<Rule, P, G, S, kActive, kMaster, kStochastic>(a, stream);
  if constexpr (kActive < Rule::kStates) {
    return pick_active<Rule, P, G, S, kMaster, kStochastic, kActive + 1>(a, stream);
  } else {
    return "no kernel for this number of state lists";
  }
}

template <class Rule, class P, class G, class S>
const char* pick_master(const RuleLaunch<Rule>& a, cudaStream_t stream) {
  // fp32 params have no master copy and are not rounded, and rounded params
  // have no master (the entry point refuses both)
  constexpr bool kLow = !std::is_same<P, float>::value;
  if constexpr (kLow) {
    if (a.stochastic) return a.master ? "stochastic rounding takes no master weights"
                                      : pick_active<Rule, P, G, S, false, true>(a, stream);
    if (a.master) return pick_active<Rule, P, G, S, true, false>(a, stream);
  } else {
    if (a.stochastic) return "stochastic rounding rounds bfloat16/float16 params only";
  }
  return pick_active<Rule, P, G, S, false, false>(a, stream);
}

}  // namespace

template <class Rule>
const char* launch_rule(const RuleLaunch<Rule>& a, void* raw_stream) {
  static_assert(Rule::kStates <= kMaxStates, "raise cuda::kMaxStates");
  auto stream = static_cast<cudaStream_t>(raw_stream);
  const char* err = nullptr;
  bool ok;
  if (a.state_dtype == DType::U8) {
    // 8-bit states: dispatched on the params and grads alone
    ok = dispatch_param_grad_state(a.param_dtype, a.grad_dtype, DType::F32, [&](auto p, auto g, auto) {
      err = pick_master<Rule, decltype(p), decltype(g), Quant8Codec>(a, stream);
    });
  } else {
    ok = dispatch_param_grad_state(a.param_dtype, a.grad_dtype, a.state_dtype, [&](auto p, auto g, auto s) {
      err = pick_master<Rule, decltype(p), decltype(g), PlainCodec<decltype(s)>>(a, stream);
    });
  }
  if (!ok) return "unsupported dtype combination";
  if (err != nullptr) return err;
  if (a.stochastic) {
    err = advance_scalars(a.t.rounding_key, a.t.n, a.ctl.found_inf, ScalarOp::kAdvanceRoundingKey, stream);
    if (err != nullptr) return err;
  }
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
