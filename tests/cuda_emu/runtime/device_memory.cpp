// Emulated device memory: exactly sized allocations, so that ASan sees an
// access one byte past the end, at the alignments a GPU program meets (a
// cudaMalloc or caching-allocator block is 512-byte aligned; a view starts any
// number of elements into one). fo_emu_alloc(bytes, lead) gives `bytes` that
// start `lead` bytes into a 512-aligned block, the way a view does; the lead
// bytes are out of bounds for the kernels. ASan poisons whole 8-byte granules
// only, so the part of the lead that shares a granule with the first element is
// kept in a table and checked on every global access (pad_hit).
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "state.h"

namespace fo_emu {
namespace {

struct Allocation {
  char* base;    // what posix_memalign gave
  size_t lead;   // bytes before the data
  size_t bytes;  // the data
};

std::mutex mu;
std::unordered_map<uintptr_t, Allocation> allocations;  // by data pointer
std::unordered_map<uintptr_t, Allocation> pad_granules;  // granule (addr / 8) of a lead's last bytes -> its allocation

void rebuild_bloom() {
  std::fill(std::begin(pad_bloom), std::end(pad_bloom), 0);
  for (const auto& [g, a] : pad_granules) pad_bloom[pad_bit(g) / 64] |= uint64_t{1} << (pad_bit(g) % 64);
}

void* allocate(size_t bytes, size_t lead) {
  void* base = nullptr;
  if (posix_memalign(&base, 512, lead + bytes + (lead + bytes == 0)) != 0) return nullptr;
  char* data = static_cast<char*>(base) + lead;
  std::lock_guard<std::mutex> lock(mu);
  allocations[reinterpret_cast<uintptr_t>(data)] = Allocation{static_cast<char*>(base), lead, bytes};
  if (lead > 0) {
    if (__asan_poison_memory_region) __asan_poison_memory_region(base, lead);  // whole granules
    if (reinterpret_cast<uintptr_t>(data) % 8 != 0) {
      const uintptr_t g = reinterpret_cast<uintptr_t>(data) / 8;
      pad_granules[g] = Allocation{static_cast<char*>(base), lead, bytes};
      pad_bloom[pad_bit(g) / 64] |= uint64_t{1} << (pad_bit(g) % 64);
    }
  }
  return data;
}

bool release(void* data) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = allocations.find(reinterpret_cast<uintptr_t>(data));
  if (it == allocations.end()) return false;
  const Allocation a = it->second;
  allocations.erase(it);
  if (pad_granules.erase(reinterpret_cast<uintptr_t>(data) / 8) != 0) rebuild_bloom();
  if (__asan_unpoison_memory_region) __asan_unpoison_memory_region(a.base, a.lead);
  std::free(a.base);
  return true;
}

}  // namespace

uint64_t pad_bloom[1024];

bool pad_hit_slow(uintptr_t addr, size_t size, std::string* what) {
  for (uintptr_t g : {addr / 8, (addr + size - 1) / 8}) {
    auto it = pad_granules.find(g);
    if (it == pad_granules.end()) continue;
    const Allocation& a = it->second;
    const auto data = reinterpret_cast<uintptr_t>(a.base) + a.lead;
    if (addr < data && addr + size > g * 8) {
      std::ostringstream out;
      out << (data - addr) << " bytes before an emulated allocation of " << a.bytes << " bytes at 0x" << std::hex
          << data;
      *what = out.str();
      return true;
    }
  }
  return false;
}

}  // namespace fo_emu

cudaError_t cudaMalloc(void** ptr, size_t size) {
  *ptr = fo_emu::allocate(size, 0);
  return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (fo_emu::release(ptr)) return cudaSuccess;
  fo_emu::set_error(cudaErrorInvalidValue, "fusedopt CUDA emulation: cudaFree of a pointer cudaMalloc did not give");
  return cudaErrorInvalidValue;
}

extern "C" __attribute__((visibility("default"))) void* fo_emu_alloc(uint64_t bytes, uint64_t lead) {
  return fo_emu::allocate(bytes, lead);
}

extern "C" __attribute__((visibility("default"))) int fo_emu_free(void* data) { return fo_emu::release(data) ? 0 : -1; }
