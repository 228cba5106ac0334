// What the runtime's parts share: the running launch, its block and threads,
// and how a finding stops the launch. Everything here is touched by one OS
// thread at a time (run_launch holds a lock for the whole launch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fiber.h"

namespace fo_emu {

enum class Wait : uint8_t { kReady, kBarrier, kShuffle, kDone };
enum class BarrierOp : uint8_t { kSync, kOr, kAnd, kCount };

struct Thread {
  FiberContext ctx;
  char* stack_lo = nullptr;
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
  unsigned linear = 0;  // index within the block
  uint3 idx{};
  Wait wait = Wait::kDone;
  // at a barrier
  BarrierOp op = BarrierOp::kSync;
  int predicate = 0;
  int barrier_result = 0;
  // at a barrier or shuffle: where
  const char* file = nullptr;
  int line = 0;
  // at a shuffle
  unsigned mask = 0;
  ShuffleMode mode = ShuffleMode::kDown;
  int lane_arg = 0;
  int width = 32;
  uint64_t value = 0;
  uint64_t result = 0;
};

struct Emu {
  // the launch
  const LaunchShape* shape = nullptr;
  void (*enter)(void*) = nullptr;
  void* call = nullptr;
  uint64_t launch_stamp = 0;  // counts launches; the overlap shadow is per launch
  bool in_kernel = false;     // a kernel thread is running (the access hooks look)
  bool aborted = false;       // a finding stopped the launch
  // the block
  uint3 block{};
  uint64_t block_linear = 0;
  unsigned nthreads = 0;
  std::vector<Thread> threads;
  Thread* current = nullptr;
  uintptr_t stack_lo = 0;    // the current thread's stack, for the access checks' fast path
  size_t stack_size = 0;
  uintptr_t shared_lo = 0;   // the __shared__ section
  size_t shared_size = 0;
  // A lane of this block read a lane outside its shuffle's mask: it got all-ones
  // bits (a NaN for floats), and the access checks look for them in stores.
  bool undefined_shuffle = false;
  std::string undefined_shuffle_what;  // which lane read which, where
  uint64_t barrier_epoch = 0;  // counts barriers (and block starts) in the whole run
  uint64_t block_stamp = 0;    // counts blocks in the whole run
  FiberContext scheduler;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
};

extern Emu emu;

// The running kernel's name (symbolized once per launch).
const std::string& kernel_name();
// "(x, y, z)"
std::string dims(uint3 v);
// "file:line" of a code address, from the debug information.
std::string where(const void* pc);
// A shared variable's name and the byte within it, for shared-memory reports.
std::string shared_name(const void* addr);

// Ends the launch with `code` and `report` (the first finding wins). From a
// kernel thread it never returns: the thread is left where it is and the
// scheduler stops the launch.
void fail(cudaError_t code, const std::string& report);
// The error a launch (or another API call) left, for cudaGetLastError.
void set_error(cudaError_t code, const std::string& text);

// Switches from the current thread back to its block's scheduler.
void yield_to_scheduler(bool finished);

// The access checks' per-launch and per-block state (access_checks.cpp).
void checks_begin_launch();
void checks_begin_block();
void checks_end_block();   // settles a pending overlap
void checks_end_launch();
void checks_after_yield();  // a thread switched back: settles what its last write left pending

// The shared-memory section and the allocations made by the emulation.
char* shared_begin();
char* shared_end();
// Whether [addr, addr + size) touches the lead bytes of a misaligned emulated
// allocation (device_memory.cpp); `what` says where. The first test is a
// bitmap, so that accesses far from any lead cost a few instructions.
extern uint64_t pad_bloom[1024];
bool pad_hit_slow(uintptr_t addr, size_t size, std::string* what);
inline size_t pad_bit(uintptr_t granule) { return static_cast<size_t>((granule * 0x9E3779B97F4A7C15ull) >> 48); }
inline bool pad_hit(uintptr_t addr, size_t size, std::string* what) {
  const uintptr_t g0 = addr / 8, g1 = (addr + size - 1) / 8;
  const size_t b0 = pad_bit(g0), b1 = pad_bit(g1);
  if (((pad_bloom[b0 / 64] >> (b0 % 64)) & 1u) == 0 && ((pad_bloom[b1 / 64] >> (b1 % 64)) & 1u) == 0) return false;
  return pad_hit_slow(addr, size, what);
}

// Marks the fiber stacks to be cleaned before reuse (after an aborted launch
// their frames' ASan redzones are still poisoned).
void stacks_dirty();

}  // namespace fo_emu

// The sanitizers' interfaces, weak so that the runtime also links without them.
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size) __attribute__((weak));
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old)
    __attribute__((weak));
void __asan_poison_memory_region(void const volatile* addr, size_t size) __attribute__((weak));
void __asan_unpoison_memory_region(void const volatile* addr, size_t size) __attribute__((weak));
void* __asan_region_is_poisoned(void* beg, size_t size) __attribute__((weak));
void __asan_report_load_n(void* addr, size_t size) __attribute__((weak));
void __asan_report_store_n(void* addr, size_t size) __attribute__((weak));
void __sanitizer_symbolize_pc(void* pc, const char* fmt, char* out, size_t out_size) __attribute__((weak));
void __sanitizer_symbolize_global(void* addr, const char* fmt, char* out, size_t out_size) __attribute__((weak));
void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));
}
