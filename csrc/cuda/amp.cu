// grad_stats_ (one read of every grad: found_inf and the global sum of squares)
// and unscale_ (GradScaler.unscale_ for every float dtype) on CUDA.
#include "kernel_common.cuh"

namespace fusedopt {
namespace cuda {
namespace {

using GradTable = ChunkTable<1>;

constexpr int kWarps = kThreads / 32;

// Sum over the block in a fixed order: lanes by shuffle-down tree, then warps
// in index order. The same inputs give the same bits on every run.
__device__ double block_sum(double x) {
  __shared__ double warp_sums[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  double total = 0.0;
  if (warp == 0) {
    total = lane < kWarps ? warp_sums[lane] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_down_sync(0xffffffffu, total, offset);
  }
  __syncthreads();  // warp_sums may be reused by the caller's next block_sum
  return total;     // valid in thread 0
}

// Each block writes the sum of squares of its chunk to workspace[block]; the
// block that finishes last adds the launch's partials, in block order, to the
// running total (workspace[kStatsMaxBlocks]). No float atomics anywhere, so the
// result does not depend on scheduling. workspace[kStatsMaxBlocks + 1] holds the
// block counter, zeroed before a call's first launch; the last block resets it
// for the next launch. A workspace serves one stream at a time (fusedopt/_ops.py
// keeps one per stream).
template <class G>
__global__ void __launch_bounds__(kThreads) grad_stats_kernel(
    const GradTable table,
    const float* grad_scale,
    double* workspace,
    float* found_inf,
    float* sumsq,
    const bool first,
    const bool last) {
  const ChunkSpan s = chunk_span(table);
  const G* g = static_cast<const G*>(table.ptr[0][s.tensor]) + s.start;
  const float inv = grad_scale ? math::inv_scale_of(*grad_scale) : 1.0f;
  double acc = 0.0;
  for_chunk(s.n, pack_aligned(g), [&](int i, bool pack) {
    float x[kILP];
    load_elems(x, g, i, pack);
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (pack || k == 0) {
        const double u = static_cast<double>(x[k] * inv);  // unscaled as unscale_ would, in fp32
        acc += u * u;                                       // exact product in double
      }
    }
  });
  const double block_total = block_sum(acc);

  __shared__ bool is_last;
  unsigned int* counter = reinterpret_cast<unsigned int*>(workspace + kStatsMaxBlocks + 1);
  if (threadIdx.x == 0) {
    workspace[blockIdx.x] = block_total;
    __threadfence();
    is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;

  __threadfence();
  double part = 0.0;
  for (int b = threadIdx.x; b < static_cast<int>(gridDim.x); b += blockDim.x) {
    part += static_cast<volatile double*>(workspace)[b];
  }
  const double launch_total = block_sum(part);
  if (threadIdx.x == 0) {
    const double running = first ? launch_total : workspace[kStatsMaxBlocks] + launch_total;
    workspace[kStatsMaxBlocks] = running;
    *counter = 0u;
    if (last) {
      *sumsq = static_cast<float>(static_cast<double>(*sumsq) + running);
      if (!isfinite(running)) *found_inf = 1.0f;
    }
  }
}

// grads *= inv_scale; found_inf = 1 where an input is inf/nan (torch's
// _amp_foreach_non_finite_check_and_unscale_, for bf16 too).
template <class G>
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(const GradTable table, float* found_inf, const float* inv_scale) {
  const ChunkSpan s = chunk_span(table);
  G* g = static_cast<G*>(table.ptr[0][s.tensor]) + s.start;
  const float inv = *inv_scale;
  bool bad = false;
  for_chunk(s.n, pack_aligned(g), [&](int i, bool pack) {
    float x[kILP];
    load_elems(x, g, i, pack);
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      if (pack || k == 0) {
        bad |= !isfinite(x[k]);
        x[k] = inv == 1.0f ? x[k] : x[k] * inv;
      }
    }
    if (inv != 1.0f) store_elems(g, i, x, pack);
  });
  // every writer stores the same value: a benign race, as in torch's kernel
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
}

template <class Launch>
void for_each_grad_table(int n, const int64_t* numel, void* const* grads, Launch launch) {
  for_each_table<1>(
      n, numel, [&](int, int i) { return grads[i]; }, [](int) -> void* { return nullptr; }, launch);
}

}  // namespace

const char* launch_grad_stats(const StatsLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  // The block counter must start at zero whatever the workspace held (a fresh
  // allocation, an interrupted call): reset it on the stream, which a CUDA graph
  // captures like a kernel. The partials and the running total need no reset:
  // each is written before it is read.
  if (a.first) {
    if (cudaMemsetAsync(a.workspace + kStatsMaxBlocks + 1, 0, sizeof(double), stream) != cudaSuccess) {
      return last_error();
    }
  }
  // Count the launches first, so that `first` and `last` mark the call's ends.
  int launches = 0;
  for_each_grad_table(a.n, a.numel, const_cast<void* const*>(a.grad), [&](const GradTable&, int) { ++launches; });
  static_assert(kMaxBlocks <= kStatsMaxBlocks, "one partial per block must fit the workspace");
  const char* err = nullptr;
  int index = 0;
  dispatch_dtype(a.dtype, [&](auto tag) {
    using G = decltype(tag);
    for_each_grad_table(a.n, a.numel, const_cast<void* const*>(a.grad), [&](const GradTable& table, int blocks) {
      if (err) return;
      const bool first = a.first && index == 0;
      const bool last = a.last && index == launches - 1;
      grad_stats_kernel<G><<<blocks, kThreads, 0, stream>>>(table, a.grad_scale, a.workspace, a.found_inf, a.sumsq,
                                                           first, last);
      err = last_error();
      ++index;
    });
  });
  return err;
}

const char* launch_unscale(const UnscaleLaunch& a, void* raw_stream) {
  auto stream = static_cast<cudaStream_t>(raw_stream);
  const char* err = nullptr;
  dispatch_dtype(a.dtype, [&](auto tag) {
    using G = decltype(tag);
    for_each_grad_table(a.n, a.numel, a.grad, [&](const GradTable& table, int blocks) {
      if (err) return;
      unscale_kernel<G><<<blocks, kThreads, 0, stream>>>(table, a.found_inf, a.inv_scale);
      err = last_error();
    });
  });
  return err;
}

}  // namespace cuda
}  // namespace fusedopt
