// The checks on every memory access of the emulated kernels (the hooks at the
// end of this file say how they are called).
//  - __shared__ bytes (runtime/shared_memory.ld): a race detector in the
//    manner of compute-sanitizer's racecheck. A read of a byte that another
//    thread of the block wrote since the block's last barrier, or a write of a
//    byte another thread read or wrote since then, is a hazard; so is a read of
//    a byte the block never wrote (its value is whatever the last block left).
//  - global memory: the overlap check. A byte written by two blocks of one
//    launch is reported unless the second wrote the value that was there (the
//    "every writer stores the same value" flags are benign). Atomics are not
//    plain writes and are left out (api.cpp).
//  - the lead bytes of a misaligned emulated allocation (device_memory.cpp).
// Accesses to the running thread's own stack are the thread's business.
#include <algorithm>
#include <cstring>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "state.h"

namespace fo_emu {
namespace {

// ------------------------------------------------------------ shared memory

struct SharedByte {
  uint64_t write_epoch = 0, read_epoch = 0, write_block = 0;
  const void* write_pc = nullptr;
  const void* read_pc = nullptr;
  unsigned writer = 0, reader = 0;
  bool many_readers = false;
};
std::vector<SharedByte> shared_shadow;

std::string thread_at(unsigned linear) { return "thread " + dims(emu.threads[linear].idx); }

[[noreturn]] void shared_hazard(const char* kind, uintptr_t addr, size_t size, bool store, const void* pc,
                                const std::string& other) {
  std::ostringstream r;
  r << "shared-memory " << kind << " in kernel " << kernel_name() << ", block " << dims(emu.block) << ": "
    << thread_at(emu.current->linear) << (store ? " writes " : " reads ") << size << " bytes at 0x" << std::hex
    << addr << std::dec << " (" << shared_name(reinterpret_cast<void*>(addr)) << ") at " << where(pc) << ", "
    << other;
  fail(cudaErrorLaunchFailure, r.str());
  __builtin_unreachable();
}

void shared_access(uintptr_t addr, size_t size, bool store, const void* pc) {
  const auto begin = reinterpret_cast<uintptr_t>(shared_begin());
  const auto end = reinterpret_cast<uintptr_t>(shared_end());
  if (shared_shadow.size() != end - begin) shared_shadow.assign(end - begin, SharedByte{});
  const unsigned me = emu.current->linear;
  const uint64_t epoch = emu.barrier_epoch;
  for (uintptr_t a = std::max(addr, begin); a < std::min(addr + size, end); ++a) {
    SharedByte& s = shared_shadow[a - begin];
    if (store) {
      if (s.write_block == emu.block_stamp && s.write_epoch == epoch && s.writer != me) {
        shared_hazard("race (write after write)", addr, size, store, pc,
                      "which " + thread_at(s.writer) + " wrote at " + where(s.write_pc) + " with no barrier between");
      }
      if (s.read_epoch == epoch && (s.reader != me || s.many_readers)) {
        shared_hazard("race (write after read)", addr, size, store, pc,
                      "which " + (s.reader != me ? thread_at(s.reader) : std::string("other threads")) +
                          " read at " + where(s.read_pc) + " with no barrier between");
      }
      s.write_epoch = epoch;
      s.write_block = emu.block_stamp;
      s.writer = me;
      s.write_pc = pc;
    } else {
      if (s.write_block != emu.block_stamp) {
        shared_hazard("read of uninitialized memory", addr, size, store, pc,
                      "which no thread of this block has written: it holds what an earlier block left");
      }
      if (s.write_epoch == epoch && s.writer != me) {
        shared_hazard("race (read after write)", addr, size, store, pc,
                      "which " + thread_at(s.writer) + " wrote at " + where(s.write_pc) + " with no barrier between");
      }
      if (s.read_epoch != epoch) {
        s.read_epoch = epoch;
        s.reader = me;
        s.many_readers = false;
        s.read_pc = pc;
      } else if (s.reader != me) {
        s.many_readers = true;
      }
    }
  }
}

// ------------------------------------------------------------ global overlap

// Per 4 KiB page of written memory, per launch: which bytes were written, and
// while one block alone wrote there, which block. Most pages are one block's
// (a chunk is 128-256 KiB); only a page a second block writes into gets an
// owner per byte (the bytes written so far all belong to the first block).
// That keeps the shadow small enough to stay in cache.
constexpr uintptr_t kPage = 4096;
constexpr uint16_t kUnknownThread = 0xffff;

struct Owners {
  uint32_t block[kPage];  // 1 + the block's linear index, 0: not written
  uint16_t thread[kPage];
};

struct OwnerPage {
  uint64_t stamp;  // the launch this page's record belongs to
  uint32_t sole;   // 1 + the block that wrote here, while it is the only one
  uint64_t written[kPage / 64];
  Owners* owners;  // once two blocks wrote here
};

std::unordered_map<uintptr_t, OwnerPage*> pages;
std::vector<OwnerPage*> spare;
constexpr size_t kMaxSpare = 4096;
uintptr_t last_number = ~uintptr_t{0};  // a one-page cache: writes come in runs
OwnerPage* last = nullptr;

OwnerPage* page_of(uintptr_t number) {
  if (number == last_number && last != nullptr && last->stamp == emu.launch_stamp) return last;
  OwnerPage*& p = pages[number];
  if (p == nullptr) {
    if (spare.empty()) {
      p = static_cast<OwnerPage*>(std::calloc(1, sizeof(OwnerPage)));
    } else {
      p = spare.back();
      spare.pop_back();
    }
    p->stamp = 0;
  }
  if (p->stamp != emu.launch_stamp) {
    std::memset(p->written, 0, sizeof(p->written));
    p->sole = 0;
    std::free(p->owners);
    p->owners = nullptr;
    p->stamp = emu.launch_stamp;
  }
  last_number = number;
  last = p;
  return p;
}

// A write to bytes another block wrote, judged once the write is done.
struct Pending {
  bool active = false;
  uintptr_t addr = 0;
  size_t size = 0;
  unsigned char before[16] = {};
  uint32_t other_block = 0;
  uint16_t other_thread = 0;
  const void* pc = nullptr;
  unsigned thread = 0;
} pending;

uint3 unflatten(uint64_t linear, dim3 d) {
  return uint3{static_cast<unsigned>(linear % d.x), static_cast<unsigned>((linear / d.x) % d.y),
               static_cast<unsigned>(linear / (uint64_t{d.x} * d.y))};
}

// A store made while a lane of the block holds an undefined shuffle result:
// checked for the all-ones bits once it is done.
struct PoisonCheck {
  bool active = false;
  uintptr_t addr = 0;
  size_t size = 0;
  const void* pc = nullptr;
  unsigned thread = 0;
} poison_check;

void settle_poison() {
  poison_check.active = false;
  const auto* bytes = reinterpret_cast<const unsigned char*>(poison_check.addr);
  for (size_t i = 0; i < poison_check.size; ++i) {
    if (bytes[i] != 0xff) return;
  }
  std::ostringstream r;
  r << "undefined shuffle value used in kernel " << kernel_name() << ", block " << dims(emu.block) << ": "
    << thread_at(poison_check.thread) << " stores " << poison_check.size << " bytes at 0x" << std::hex
    << poison_check.addr << std::dec << " at " << where(poison_check.pc) << " made of what "
    << emu.undefined_shuffle_what;
  fail(cudaErrorLaunchFailure, r.str());
}

void settle_pending() {
  if (poison_check.active) settle_poison();
  if (!pending.active) return;
  pending.active = false;
  if (std::memcmp(reinterpret_cast<const void*>(pending.addr), pending.before, pending.size) == 0) return;
  std::ostringstream r;
  r << "two blocks write one element in kernel " << kernel_name() << ": block " << dims(emu.block) << " "
    << thread_at(pending.thread) << " writes " << pending.size << " bytes at 0x" << std::hex << pending.addr
    << std::dec << " at " << where(pending.pc) << ", which block " << dims(unflatten(pending.other_block, emu.shape->grid));
  if (pending.other_thread != kUnknownThread) {
    r << " thread " << dims(unflatten(pending.other_thread, emu.shape->block));
  }
  r << " wrote in the same launch (another value: the result depends on which block runs last)";
  fail(cudaErrorLaunchFailure, r.str());
}

void conflict(uintptr_t addr, size_t size, uint32_t owner, uint16_t thread, const void* pc) {
  if (pending.active) return;
  pending.active = true;
  pending.addr = addr;
  pending.size = std::min<size_t>(size, sizeof(pending.before));
  std::memcpy(pending.before, reinterpret_cast<const void*>(addr), pending.size);
  pending.other_block = owner - 1;
  pending.other_thread = thread;
  pending.pc = pc;
  pending.thread = emu.current->linear;
}

void global_write(uintptr_t addr, size_t size, const void* pc) {
  const auto me = static_cast<uint32_t>(emu.block_linear + 1);
  const auto thread = static_cast<uint16_t>(emu.current->linear);
  for (uintptr_t a = addr; a < addr + size;) {
    OwnerPage* p = page_of(a / kPage);
    const uintptr_t stop = std::min(addr + size, (a / kPage + 1) * kPage);
    if (p->sole == 0) p->sole = me;
    if (p->sole != me && p->owners == nullptr) {  // a second block: owners per byte from here on
      p->owners = static_cast<Owners*>(std::malloc(sizeof(Owners)));
      for (uintptr_t i = 0; i < kPage; ++i) {
        const bool w = (p->written[i / 64] >> (i % 64)) & 1u;
        p->owners->block[i] = w ? p->sole : 0;
        p->owners->thread[i] = kUnknownThread;
      }
    }
    for (; a < stop; ++a) {
      const uintptr_t off = a % kPage;
      p->written[off / 64] |= uint64_t{1} << (off % 64);
      if (p->owners == nullptr) continue;
      const uint32_t owner = p->owners->block[off];
      if (owner != 0 && owner != me) conflict(addr, size, owner, p->owners->thread[off], pc);
      p->owners->block[off] = me;
      p->owners->thread[off] = thread;
    }
  }
}

// ------------------------------------------------------------ dispatch

// Most calls are a kernel's own locals (arrays it indexes live on its stack):
// those leave first.
inline void on_access(uintptr_t addr, size_t size, bool store, const void* pc) {
  if (addr - emu.stack_lo < emu.stack_size) return;
  if (pending.active || poison_check.active) settle_pending();  // the write it waited for has happened by now
  if (emu.aborted) return;
  if (store && emu.undefined_shuffle && (size == 4 || size == 8)) poison_check = PoisonCheck{true, addr, size, pc, emu.current->linear};
  if (addr + size > emu.shared_lo && addr < emu.shared_lo + emu.shared_size) {
    shared_access(addr, size, store, pc);
    return;
  }
  std::string what;
  if (pad_hit(addr, size, &what)) {
    std::ostringstream r;
    r << "out-of-bounds " << (store ? "write" : "read") << " in kernel " << kernel_name() << ", block "
      << dims(emu.block) << ", thread " << dims(emu.current->idx) << ": " << size << " bytes at 0x" << std::hex
      << addr << std::dec << " at " << where(pc) << ", " << what;
    fail(cudaErrorIllegalAddress, r.str());
  }
  if (store) global_write(addr, size, pc);
}

}  // namespace

void checks_begin_launch() { pending.active = false; }

void checks_begin_block() {}

void checks_end_block() { settle_pending(); }

void checks_end_launch() {
  settle_pending();
  for (auto& [number, p] : pages) {
    std::free(p->owners);
    p->owners = nullptr;
    if (spare.size() < kMaxSpare) {
      spare.push_back(p);
    } else {
      std::free(p);
    }
  }
  pages.clear();
  last = nullptr;
  last_number = ~uintptr_t{0};
}

void checks_after_yield() { settle_pending(); }

}  // namespace fo_emu

// The hooks. The kernels' translation units are compiled with gcc's
// -fsanitize=thread instrumentation, which calls __tsan_read4(addr) and the like
// before every memory access (statics included, which ASan's instrumentation
// leaves out when it can prove them in bounds: the __shared__ variables), but
// are not linked with TSan's runtime: these definitions are the hooks. Each
// does the emulation's checks, then asks ASan's runtime (preloaded) whether the
// bytes are addressable; ASan's report names the kernel's code (the hook
// tail-calls it).
extern "C" {
void __asan_load1(uintptr_t);
void __asan_load2(uintptr_t);
void __asan_load4(uintptr_t);
void __asan_load8(uintptr_t);
void __asan_load16(uintptr_t);
void __asan_loadN(uintptr_t, uintptr_t);
void __asan_store1(uintptr_t);
void __asan_store2(uintptr_t);
void __asan_store4(uintptr_t);
void __asan_store8(uintptr_t);
void __asan_store16(uintptr_t);
void __asan_storeN(uintptr_t, uintptr_t);

#define FO_EMU_HOOK(name, n, store, asan_check)                                                     \
  __attribute__((visibility("hidden"))) void name(void* p) {                                        \
    const auto addr = reinterpret_cast<uintptr_t>(p);                                               \
    if (__builtin_expect(fo_emu::emu.in_kernel, 0)) {                                               \
      fo_emu::on_access(addr, n, store, __builtin_return_address(0));                               \
    }                                                                                               \
    asan_check(addr);                                                                               \
  }
FO_EMU_HOOK(__tsan_read1, 1, false, __asan_load1)
FO_EMU_HOOK(__tsan_read2, 2, false, __asan_load2)
FO_EMU_HOOK(__tsan_read4, 4, false, __asan_load4)
FO_EMU_HOOK(__tsan_read8, 8, false, __asan_load8)
FO_EMU_HOOK(__tsan_read16, 16, false, __asan_load16)
FO_EMU_HOOK(__tsan_write1, 1, true, __asan_store1)
FO_EMU_HOOK(__tsan_write2, 2, true, __asan_store2)
FO_EMU_HOOK(__tsan_write4, 4, true, __asan_store4)
FO_EMU_HOOK(__tsan_write8, 8, true, __asan_store8)
FO_EMU_HOOK(__tsan_write16, 16, true, __asan_store16)
// accesses the compiler cannot prove aligned: checked alike (UBSan reports a
// misaligned vector type)
FO_EMU_HOOK(__tsan_unaligned_read2, 2, false, __asan_load2)
FO_EMU_HOOK(__tsan_unaligned_read4, 4, false, __asan_load4)
FO_EMU_HOOK(__tsan_unaligned_read8, 8, false, __asan_load8)
FO_EMU_HOOK(__tsan_unaligned_read16, 16, false, __asan_load16)
FO_EMU_HOOK(__tsan_unaligned_write2, 2, true, __asan_store2)
FO_EMU_HOOK(__tsan_unaligned_write4, 4, true, __asan_store4)
FO_EMU_HOOK(__tsan_unaligned_write8, 8, true, __asan_store8)
FO_EMU_HOOK(__tsan_unaligned_write16, 16, true, __asan_store16)
#undef FO_EMU_HOOK

__attribute__((visibility("hidden"))) void __tsan_read_range(void* p, uintptr_t size) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  if (__builtin_expect(fo_emu::emu.in_kernel, 0)) fo_emu::on_access(addr, size, false, __builtin_return_address(0));
  __asan_loadN(addr, size);
}

__attribute__((visibility("hidden"))) void __tsan_write_range(void* p, uintptr_t size) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  if (__builtin_expect(fo_emu::emu.in_kernel, 0)) fo_emu::on_access(addr, size, true, __builtin_return_address(0));
  __asan_storeN(addr, size);
}

// the rest of what the instrumentation calls: nothing to do
__attribute__((visibility("hidden"))) void __tsan_init() {}
__attribute__((visibility("hidden"))) void __tsan_func_entry(void*) {}
__attribute__((visibility("hidden"))) void __tsan_func_exit() {}
__attribute__((visibility("hidden"))) void __tsan_vptr_update(void**, void*) {}
__attribute__((visibility("hidden"))) void __tsan_vptr_read(void**) {}
}
