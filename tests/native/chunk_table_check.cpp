// Checks the CUDA harness's host-side chunking (csrc/cuda/chunk_table.h) without
// a GPU: for many tensor layouts, every chunk of every non-empty tensor must be
// launched exactly once, with the tensor's own pointers, size, scalar and
// offset (tables that carry offsets), and no table may exceed its capacity
// (the default tables' and the smaller 8-bit tables' of csrc/cuda/rule_kernel_q8.cuh). Exit status 0 means every case passed.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "cuda/chunk_table.h"

using namespace fusedopt::cuda;

static int failures = 0;

#define EXPECT(cond, ...)                     \
  do {                                        \
    if (!(cond)) {                            \
      std::fprintf(stderr, "FAIL: " __VA_ARGS__); \
      std::fprintf(stderr, "\n");             \
      ++failures;                             \
      return;                                 \
    }                                         \
  } while (0)

template <int kTensors = kMaxTensors, bool kOffsets = false>
static void check(const std::vector<int64_t>& numel, const char* name) {
  const int n = static_cast<int>(numel.size());
  // fake, distinct pointers: list l of tensor t
  auto ptr = [](int l, int t) { return reinterpret_cast<void*>(static_cast<uintptr_t>((t + 1) * 16 + l)); };
  auto scalar = [](int t) { return reinterpret_cast<void*>(static_cast<uintptr_t>(0x100000 + t)); };
  std::map<std::pair<int, int64_t>, int> seen;
  int launches = 0;
  bool ok = true;
  auto offset = [](int t) { return int64_t{1000003} * t + 7; };
  auto on_table = [&](const ChunkTable<3, kOffsets, kTensors>& table, int blocks) {
    ++launches;
    if (blocks <= 0 || blocks > kMaxBlocks) ok = false;
    for (int b = 0; b < blocks; ++b) {
      const int slot = table.block_tensor[b];
      if (slot >= kTensors) ok = false;
      const int t = static_cast<int>(reinterpret_cast<uintptr_t>(table.scalar[slot]) - 0x100000);
      if (t < 0 || t >= n) { ok = false; continue; }
      for (int l = 0; l < 3; ++l) {
        if (table.ptr[l][slot] != ptr(l, t)) ok = false;
      }
      if (table.numel[slot] != numel[t]) ok = false;
      if (kOffsets && table.offset[slot] != offset(t)) ok = false;
      seen[{t, table.block_chunk[b]}] += 1;
    }
  };
  for_each_table<3, kOffsets, kTensors>(n, numel.data(), ptr, scalar, on_table, offset);
  EXPECT(ok, "%s: a table had a bad size, slot, pointer or numel", name);
  size_t expected = 0;
  for (int t = 0; t < n; ++t) {
    const int64_t chunks = (numel[t] + kChunk - 1) / kChunk;
    expected += static_cast<size_t>(chunks);
    for (int64_t c = 0; c < chunks; ++c) {
      auto it = seen.find({t, c});
      EXPECT(it != seen.end() && it->second == 1, "%s: tensor %d chunk %lld launched %d times", name, t,
             static_cast<long long>(c), it == seen.end() ? 0 : it->second);
    }
  }
  EXPECT(seen.size() == expected, "%s: %zu chunks launched, %zu expected", name, seen.size(), expected);
  std::printf("ok  %-40s tensors=%-6d launches=%d\n", name, n, launches);
}

int main() {
  check({}, "no tensors");
  check({0, 0}, "only empty tensors");
  check({1}, "one element");
  check({kChunk}, "exactly one chunk");
  check({kChunk + 1}, "one chunk and one element");
  check(std::vector<int64_t>(kMaxTensors, 10), "a table full of tensors");
  check(std::vector<int64_t>(kMaxTensors + 1, 10), "one tensor past a full table");
  check(std::vector<int64_t>(5000, 4096), "5000 small tensors");
  check({int64_t(kMaxBlocks) * kChunk}, "a tensor filling a table exactly");
  check({int64_t(kMaxBlocks) * kChunk + 5, 7}, "a tensor spilling into the next table");
  check({3, int64_t(3 * kMaxBlocks) * kChunk - 1, 0, 9}, "a tensor spanning three tables");
  check({(int64_t(1) << 31) + 12345}, "more than 2^31 elements");
  check<kMaxTensors, true>(std::vector<int64_t>(kMaxTensors + 1, 10), "with offsets: one past a full table");
  check<kMaxTensors, true>({7, int64_t(kMaxBlocks) * kChunk + 5, 3}, "with offsets: a tensor spilling over");
  check<128, true>(std::vector<int64_t>(129, 300), "8-bit tables: one past a full table");
  check<128, false>(std::vector<int64_t>(1000, 70000), "8-bit tables: 1000 tensors of two chunks");
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<int64_t> numel(rng() % 700);
    for (auto& x : numel) {
      switch (rng() % 4) {
        case 0: x = 0; break;
        case 1: x = 1 + rng() % 100; break;
        case 2: x = 1 + rng() % (4 * kChunk); break;
        default: x = 1 + rng() % (int64_t(300) * kChunk); break;
      }
    }
    char name[64];
    std::snprintf(name, sizeof(name), "random layout %d", trial);
    check(numel, name);
  }
  if (failures) std::fprintf(stderr, "%d case(s) failed\n", failures);
  return failures ? 1 : 0;
}
