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

// kOffsets: the table also carries one int64 per tensor (stochastic rounding:
// the global index of the tensor's first element); a table without it keeps a
// one-element placeholder, so the kernels that need none pay 8 bytes.
// kTensors: the tensors one table holds; tables of many lists (8-bit states:
// codes and scales of each state) hold fewer, to fit the parameter space.
template <int kLists, bool kOffsets = false, int kTensors = kMaxTensors>
struct ChunkTable {
  static constexpr int kCapacity = kTensors;
  void* ptr[kLists][kTensors];
  int64_t numel[kTensors];
  void* scalar[kTensors];  // per-tensor scalar (step counter, momentum flag)
  int64_t offset[kOffsets ? kTensors : 1];
  int32_t block_chunk[kMaxBlocks];
  uint16_t block_tensor[kMaxBlocks];
};

static_assert(sizeof(ChunkTable<6, true>) + 512 <= kMaxParamBytes, "chunk table exceeds the kernel parameter space");

// The offset of no tensor, for the tables without offsets.
struct NoOffsets {
  int64_t operator()(int) const { return 0; }
};

// Fills tables and calls launch(table, n_blocks) whenever one is full. `get`
// returns list `l`'s pointer for tensor `t`; tensors with no elements are skipped.
// `get_offset(t)` fills the offsets of a table that has them.
template <int kLists, bool kOffsets = false, int kTensors = kMaxTensors, class GetPtr, class GetScalar, class Launch,
          class GetOffset = NoOffsets>
void for_each_table(int n, const int64_t* numel, GetPtr get, GetScalar get_scalar, Launch launch,
                    GetOffset get_offset = {}) {
  ChunkTable<kLists, kOffsets, kTensors> table{};  // zeroed: unused slots are passed to the kernel too
  int nt = 0;
  int nb = 0;
  for (int t = 0; t < n; ++t) {
    if (numel[t] == 0) continue;
    for (int l = 0; l < kLists; ++l) table.ptr[l][nt] = get(l, t);
    table.numel[nt] = numel[t];
    table.scalar[nt] = get_scalar(t);
    if constexpr (kOffsets) table.offset[nt] = get_offset(t);
    const int64_t chunks = (numel[t] + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      table.block_tensor[nb] = static_cast<uint16_t>(nt);
      table.block_chunk[nb] = static_cast<int32_t>(c);
      ++nb;
      const bool tensor_done = c == chunks - 1;
      if (nb == kMaxBlocks || (tensor_done && nt + 1 == kTensors)) {
        launch(table, nb);
        nb = 0;
        if (tensor_done) {
          nt = -1;  // the next tensor starts a fresh table
        } else {
          // the tensor continues in the next table, in slot 0
          for (int l = 0; l < kLists; ++l) table.ptr[l][0] = table.ptr[l][nt];
          table.numel[0] = table.numel[nt];
          table.scalar[0] = table.scalar[nt];
          if constexpr (kOffsets) table.offset[0] = table.offset[nt];
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
