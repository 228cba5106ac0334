// Work partitioning for the CPU kernels: one parallel region for a whole call,
// however many tensors it holds (torch's fused CPU optimizers open one region
// per tensor, which is what makes them slow on many small tensors).
#pragma once

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fusedopt {
namespace cpu {

// Below this many elements per thread a parallel region costs more than it saves.
constexpr int64_t kMinElemsPerThread = 32768;
// Share boundaries fall on multiples of this many elements within a tensor, so
// two threads never write the same cache line and vectors stay aligned.
constexpr int64_t kShareAlign = 64;

// Calls fn(tensor, lo, hi) so that every element of every tensor is covered
// exactly once. The concatenation of all tensors is cut into one contiguous share
// per thread, balanced by element count; a share starts inside a tensor only at
// a multiple of `align` (a multiple of kShareAlign: 8-bit states cut at blocks).
template <class Fn>
void for_each_share(const std::vector<int64_t>& numels, const Fn& fn, int64_t align = kShareAlign) {
  const int64_t n_tensors = static_cast<int64_t>(numels.size());
  std::vector<int64_t> start(n_tensors + 1, 0);
  for (int64_t t = 0; t < n_tensors; ++t) start[t + 1] = start[t] + numels[t];
  const int64_t total = start[n_tensors];
  if (total == 0) return;

  const int64_t threads = std::max<int64_t>(1, torch::stable::get_num_threads());
  const int64_t shares = std::min<int64_t>(threads, std::max<int64_t>(1, total / kMinElemsPerThread));
  if (shares == 1) {
    for (int64_t t = 0; t < n_tensors; ++t) {
      if (numels[t] > 0) fn(t, int64_t{0}, numels[t]);
    }
    return;
  }

  // Cut s at global element total*s/shares, moved down to an aligned offset
  // inside the tensor it falls in. Neighbouring shares compute the same cut.
  struct Cut {
    int64_t tensor;
    int64_t offset;
  };
  auto cut = [&](int64_t s) -> Cut {
    if (s >= shares) return {n_tensors, 0};
    const int64_t g = total / shares * s + total % shares * s / shares;
    const int64_t t = std::upper_bound(start.begin(), start.end(), g) - start.begin() - 1;
    return {t, (g - start[t]) / align * align};
  };
  torch::stable::parallel_for(0, shares, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const Cut a = cut(s);
      const Cut b = cut(s + 1);
      for (int64_t t = a.tensor; t <= b.tensor && t < n_tensors; ++t) {
        const int64_t lo = t == a.tensor ? a.offset : 0;
        const int64_t hi = t == b.tensor ? b.offset : numels[t];
        if (hi > lo) fn(t, lo, hi);
      }
    }
  });
}

// A fixed list of blocks, independent of the thread count, for reductions whose
// result must not depend on how many threads ran them.
struct Block {
  int64_t tensor;
  int64_t lo;
  int64_t hi;
};

constexpr int64_t kReduceBlock = 16384;

inline std::vector<Block> fixed_blocks(const std::vector<int64_t>& numels) {
  std::vector<Block> blocks;
  for (int64_t t = 0; t < static_cast<int64_t>(numels.size()); ++t) {
    for (int64_t lo = 0; lo < numels[t]; lo += kReduceBlock) {
      blocks.push_back({t, lo, std::min(numels[t], lo + kReduceBlock)});
    }
  }
  return blocks;
}

// Runs fn(block_index) for every block, in parallel when the work is large enough.
template <class Fn>
void for_each_block(const std::vector<Block>& blocks, int64_t total, const Fn& fn) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  const int64_t threads = std::max<int64_t>(1, torch::stable::get_num_threads());
  if (threads == 1 || total < 2 * kMinElemsPerThread) {
    for (int64_t b = 0; b < n; ++b) fn(b);
    return;
  }
  torch::stable::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) fn(b);
  });
}

}  // namespace cpu
}  // namespace fusedopt
