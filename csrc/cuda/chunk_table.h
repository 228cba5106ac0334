// The host half of the multi-tensor-apply harness: how tensors are cut into
// chunks and packed into launch tables. Plain C++ (no CUDA), so the tests can
// compile and check it on a machine without a GPU.
#pragma once

#include <cstdint>

namespace fusedopt {
namespace cuda {

constexpr int kChunk = 65536;   // elements per block
constexpr int kThreads = 512;   // threads per block
constexpr int kILP = 4;         // elements per thread per step, loaded as one vector
constexpr int kMaxTensors = 256;
constexpr int kMaxBlocks = 2048;
constexpr int kMaxParamBytes = 32764;  // the CUDA 12.1+ kernel parameter limit

template <int kLists>
struct ChunkTable {
  void* ptr[kLists][kMaxTensors];
  int64_t numel[kMaxTensors];
  void* scalar[kMaxTensors];  // per-tensor scalar (step counter, momentum flag)
  int32_t block_chunk[kMaxBlocks];
  uint16_t block_tensor[kMaxBlocks];
};

static_assert(sizeof(ChunkTable<6>) + 512 <= kMaxParamBytes, "chunk table exceeds the kernel parameter space");

// Fills tables and calls launch(table, n_blocks) whenever one is full. `get`
// returns list `l`'s pointer for tensor `t`; tensors with no elements are skipped.
template <int kLists, class GetPtr, class GetScalar, class Launch>
void for_each_table(int n, const int64_t* numel, GetPtr get, GetScalar get_scalar, Launch launch) {
  ChunkTable<kLists> table{};  // zeroed: unused slots are passed to the kernel too
  int nt = 0;
  int nb = 0;
  for (int t = 0; t < n; ++t) {
    if (numel[t] == 0) continue;
    for (int l = 0; l < kLists; ++l) table.ptr[l][nt] = get(l, t);
    table.numel[nt] = numel[t];
    table.scalar[nt] = get_scalar(t);
    const int64_t chunks = (numel[t] + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      table.block_tensor[nb] = static_cast<uint16_t>(nt);
      table.block_chunk[nb] = static_cast<int32_t>(c);
      ++nb;
      const bool tensor_done = c == chunks - 1;
      if (nb == kMaxBlocks || (tensor_done && nt + 1 == kMaxTensors)) {
        launch(table, nb);
        nb = 0;
        if (tensor_done) {
          nt = -1;  // the next tensor starts a fresh table
        } else {
          // the tensor continues in the next table, in slot 0
          for (int l = 0; l < kLists; ++l) table.ptr[l][0] = table.ptr[l][nt];
          table.numel[0] = table.numel[nt];
          table.scalar[0] = table.scalar[nt];
          nt = 0;
        }
      }
    }
    ++nt;
  }
  if (nb > 0) launch(table, nb);
}

}  // namespace cuda
}  // namespace fusedopt
