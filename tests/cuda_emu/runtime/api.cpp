// The runtime API calls csrc/cuda makes besides launches, synchronous (a
// stream's work is done when the call returns), and the atomics. Memory they
// touch is checked as a kernel's accesses are: ASan reports an access outside
// an allocation, and the lead of a misaligned emulated allocation is out of
// bounds too.
#include <cstring>
#include <string>

#include "state.h"

namespace fo_emu {
namespace {

// Reports (through ASan, which ends the process) an access to memory that no
// allocation holds; the emulation's own lead bytes as a launch error.
bool check_region(const void* p, size_t n, bool store, const char* what) {
  if (n == 0) return true;
  auto* q = const_cast<void*>(p);
  if (__asan_region_is_poisoned && __asan_region_is_poisoned(q, n)) {
    if (store && __asan_report_store_n) __asan_report_store_n(q, n);
    if (!store && __asan_report_load_n) __asan_report_load_n(q, n);
  }
  std::string pad;
  if (pad_hit(reinterpret_cast<uintptr_t>(p), n, &pad)) {
    const std::string report = std::string(what) + " of " + std::to_string(n) + " bytes starts " + pad;
    if (emu.current) {
      fail(cudaErrorIllegalAddress, "out-of-bounds " + report + " in kernel " + kernel_name() + ", block " +
                                        dims(emu.block) + ", thread " + dims(emu.current->idx));
    }
    set_error(cudaErrorIllegalAddress, "fusedopt CUDA emulation: out-of-bounds " + report);
    return false;
  }
  return true;
}

template <class T>
T atomic_add(T* address, T val) {
  check_region(address, sizeof(T), true, "atomicAdd");
  const T old = *address;
  *address = old + val;
  return old;
}

}  // namespace
}  // namespace fo_emu

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  if (!fo_emu::check_region(ptr, count, true, "cudaMemsetAsync")) return cudaErrorIllegalAddress;
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemset(void* ptr, int value, size_t count) { return cudaMemsetAsync(ptr, value, count, nullptr); }

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind, cudaStream_t) {
  if (!fo_emu::check_region(src, count, false, "cudaMemcpy source")) return cudaErrorIllegalAddress;
  if (!fo_emu::check_region(dst, count, true, "cudaMemcpy destination")) return cudaErrorIllegalAddress;
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

unsigned int atomicAdd(unsigned int* a, unsigned int v) { return fo_emu::atomic_add(a, v); }
int atomicAdd(int* a, int v) { return fo_emu::atomic_add(a, v); }
unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return fo_emu::atomic_add(a, v); }
float atomicAdd(float* a, float v) { return fo_emu::atomic_add(a, v); }
double atomicAdd(double* a, double v) { return fo_emu::atomic_add(a, v); }
