// run_launch: CUDA's launch limits, then every block of the grid in turn, each
// thread of a block a fiber (fiber.h) scheduled round-robin until it reaches a
// barrier, a shuffle or its end. A block whose threads all wait but cannot go
// on (a barrier some thread never reaches, a shuffle missing a lane of its
// mask) is reported as divergence: never a hang.
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <cinttypes>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <sstream>

#include "launch_control.h"
#include "state.h"

// runtime/shared_memory.ld
extern "C" char fo_emu_shared_begin[];
extern "C" char fo_emu_shared_end[];

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace fo_emu {

Emu emu;

char* shared_begin() { return fo_emu_shared_begin; }
char* shared_end() { return fo_emu_shared_end; }

namespace {

// CUDA's limits (compute capability 7.0 and later).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr uint64_t kMaxGridX = (uint64_t{1} << 31) - 1;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kMaxStaticShared = 48 * 1024;
constexpr size_t kMaxParamBytes = 32764;  // sm_70+ with CUDA >= 12.1 (4 KiB before)

// A thread's stack: the kernel's frames and its copy of the parameters (a
// chunk table is ~29 KiB). Mapped lazily; a guard page below each.
constexpr size_t kStackSize = 256 * 1024;
constexpr size_t kGuard = 4096;

std::mutex launch_mutex;
bool stacks_need_cleaning = false;

struct Stacks {
  std::vector<char*> lo;
  char* get(size_t i) {
    while (lo.size() <= i) {
      void* p = mmap(nullptr, kStackSize + kGuard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) {
        std::perror("fusedopt CUDA emulation: mmap of a fiber stack");
        std::abort();
      }
      mprotect(p, kGuard, PROT_NONE);
      lo.push_back(static_cast<char*>(p) + kGuard);
    }
    return lo[i];
  }
} stacks;

void thread_main(void* arg) {
  auto* t = static_cast<Thread*>(arg);
  if (__sanitizer_finish_switch_fiber) {
    __sanitizer_finish_switch_fiber(nullptr, &emu.scheduler_stack_bottom, &emu.scheduler_stack_size);
  }
  emu.enter(emu.call);
  t->wait = Wait::kDone;
  yield_to_scheduler(true);
  __builtin_trap();  // never resumed
}

void resume(Thread& t) {
  emu.current = &t;
  emu.stack_lo = reinterpret_cast<uintptr_t>(t.stack_lo);
  emu.stack_size = t.stack_size;
  threadIdx = t.idx;
  emu.in_kernel = true;
  if (__sanitizer_start_switch_fiber) {
    __sanitizer_start_switch_fiber(&emu.scheduler_fake_stack, t.stack_lo, t.stack_size);
  }
  fiber_switch(&emu.scheduler, &t.ctx);
  if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(emu.scheduler_fake_stack, nullptr, nullptr);
  emu.in_kernel = false;
  emu.current = nullptr;
  checks_after_yield();
}

std::string thread_list(const std::vector<unsigned>& ids) {
  // "threads 0-15, 32" (linear indices; dims() for one thread)
  std::ostringstream out;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (i) out << ", ";
    out << ids[i];
    if (j > i) out << "-" << ids[j];
    i = j + 1;
  }
  return out.str();
}

const char* op_name(BarrierOp op) {
  switch (op) {
    case BarrierOp::kSync: return "__syncthreads";
    case BarrierOp::kOr: return "__syncthreads_or";
    case BarrierOp::kAnd: return "__syncthreads_and";
    case BarrierOp::kCount: return "__syncthreads_count";
  }
  return "?";
}

// Every thread of the block waits or has finished. Releases a barrier that all
// live threads reached at one place; anything else is divergence.
void settle_block() {
  const Thread* first = nullptr;
  bool releasable = true;  // every thread at one barrier, reached at one place
  for (const Thread& t : emu.threads) {
    if (t.wait != Wait::kBarrier) {
      releasable = false;
      break;
    }
    if (first == nullptr) first = &t;
    if (t.op != first->op || t.line != first->line || std::strcmp(t.file, first->file) != 0) {
      releasable = false;
      break;
    }
  }
  if (releasable) {
    int count = 0;
    for (const Thread& t : emu.threads) count += t.predicate != 0;
    const int result = first->op == BarrierOp::kOr    ? count > 0
                       : first->op == BarrierOp::kAnd ? count == static_cast<int>(emu.nthreads)
                                                      : count;
    ++emu.barrier_epoch;
    for (Thread& t : emu.threads) {
      t.barrier_result = result;
      t.wait = Wait::kReady;
    }
    return;
  }
  std::ostringstream r;
  r << "divergent barrier or shuffle in kernel " << kernel_name() << ", block " << dims(emu.block)
    << ": the block cannot go on:";
  std::vector<std::pair<std::string, std::vector<unsigned>>> groups;  // what each waits at, in order
  for (const Thread& t : emu.threads) {
    std::ostringstream what;
    if (t.wait == Wait::kDone) {
      what << "have exited";
    } else if (t.wait == Wait::kBarrier) {
      what << "wait at " << op_name(t.op) << " (" << t.file << ":" << t.line << ")";
    } else {
      what << "wait at a shuffle with mask 0x" << std::hex << t.mask << std::dec << " (" << t.file << ":" << t.line
           << ")";
    }
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == what.str(); });
    if (it == groups.end()) {
      groups.emplace_back(what.str(), std::vector<unsigned>{t.linear});
    } else {
      it->second.push_back(t.linear);
    }
  }
  for (const auto& [what, ids] : groups) r << "\n  threads " << thread_list(ids) << " " << what;
  fail(cudaErrorLaunchFailure, r.str());
}

void run_one_block(uint64_t linear) {
  const dim3 g = emu.shape->grid;
  emu.block = uint3{static_cast<unsigned>(linear % g.x), static_cast<unsigned>((linear / g.x) % g.y),
                    static_cast<unsigned>(linear / (uint64_t{g.x} * g.y))};
  emu.block_linear = linear;
  blockIdx = emu.block;
  ++emu.block_stamp;
  ++emu.barrier_epoch;
  emu.undefined_shuffle = false;
  // Shared memory starts out as garbage on a GPU: poison it, so that a value a
  // block reads before writing it is visibly wrong (the race detector also
  // reports such a read).
  std::fill(shared_begin(), shared_end(), static_cast<char>(0xff));
  checks_begin_block();
  const dim3 b = emu.shape->block;
  for (unsigned i = 0; i < emu.nthreads; ++i) {
    Thread& t = emu.threads[i];
    t.linear = i;
    t.idx = uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    t.wait = Wait::kReady;
    t.stack_lo = stacks.get(i);
    t.stack_size = kStackSize;
    t.predicate = 0;
    fiber_init(&t.ctx, t.stack_lo, t.stack_size, &thread_main, &t);
  }
  while (!emu.aborted) {
    bool ran = false;
    for (Thread& t : emu.threads) {
      if (t.wait != Wait::kReady) continue;
      resume(t);
      ran = true;
      if (emu.aborted) break;
    }
    if (emu.aborted) break;
    const bool all_done =
        std::all_of(emu.threads.begin(), emu.threads.end(), [](const Thread& t) { return t.wait == Wait::kDone; });
    if (all_done) break;
    if (!ran) settle_block();
  }
  if (!emu.aborted) checks_end_block();
}

std::string limit_report(const LaunchShape& s, size_t shared) {
  const dim3 b = s.block, g = s.grid;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  std::ostringstream r;
  if (b.x == 0 || b.y == 0 || b.z == 0 || threads > kMaxThreadsPerBlock || b.x > kMaxThreadsPerBlock ||
      b.y > kMaxThreadsPerBlock || b.z > kMaxBlockZ) {
    r << "block " << dims(uint3{b.x, b.y, b.z}) << " (" << threads
      << " threads): a block has 1 to 1024 threads, z at most 64";
  } else if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > kMaxGridX || g.y > kMaxGridYZ || g.z > kMaxGridYZ) {
    r << "grid " << dims(uint3{g.x, g.y, g.z}) << ": a grid is 1 to 2^31-1 blocks in x, 1 to 65535 in y and z";
  } else if (shared + s.dynamic_shared > kMaxStaticShared) {
    r << shared << " bytes of static (all kernels' __shared__ variables together) and " << s.dynamic_shared
      << " of dynamic shared memory: a block may have 48 KiB without opting in";
  } else if (s.param_bytes > kMaxParamBytes) {
    r << "its parameters take " << s.param_bytes << " bytes: CUDA allows " << kMaxParamBytes
      << " (sm_70+, CUDA >= 12.1)";
  }
  return r.str();
}

}  // namespace

void stacks_dirty() { stacks_need_cleaning = true; }

void yield_to_scheduler(bool finished) {
  Thread* t = emu.current;
  if (__sanitizer_start_switch_fiber) {
    __sanitizer_start_switch_fiber(finished ? nullptr : &t->asan_fake_stack, emu.scheduler_stack_bottom,
                                   emu.scheduler_stack_size);
  }
  fiber_switch(&t->ctx, &emu.scheduler);
  if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(t->asan_fake_stack, nullptr, nullptr);
}

// ---------------------------------------------------------------- barriers

int barrier(BarrierOp op, int predicate, const char* file, int line) {
  Thread* t = emu.current;
  if (t == nullptr) {
    std::fprintf(stderr, "fusedopt CUDA emulation: %s called outside a kernel (%s:%d)\n", op_name(op), file, line);
    std::abort();
  }
  t->wait = Wait::kBarrier;
  t->op = op;
  t->predicate = predicate;
  t->file = file;
  t->line = line;
  yield_to_scheduler(false);
  return t->barrier_result;
}

}  // namespace fo_emu

void __syncthreads(const char* file, int line) { fo_emu::barrier(fo_emu::BarrierOp::kSync, 0, file, line); }
int __syncthreads_or(int p, const char* file, int line) {
  return fo_emu::barrier(fo_emu::BarrierOp::kOr, p, file, line);
}
int __syncthreads_and(int p, const char* file, int line) {
  return fo_emu::barrier(fo_emu::BarrierOp::kAnd, p, file, line);
}
int __syncthreads_count(int p, const char* file, int line) {
  return fo_emu::barrier(fo_emu::BarrierOp::kCount, p, file, line);
}
void __threadfence() {}

namespace fo_emu {

cudaError_t run_launch(const LaunchShape& shape, void (*enter)(void*), void* call) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  emu.shape = &shape;
  emu.aborted = false;
  ++emu.launch_stamp;
  const size_t shared = static_cast<size_t>(shared_end() - shared_begin());
  const std::string limits = limit_report(shape, shared);
  if (!limits.empty()) {
    set_error(cudaErrorInvalidConfiguration,
              "invalid launch of kernel " + kernel_name() + ": " + limits);
    emu.shape = nullptr;
    return cudaErrorInvalidConfiguration;
  }
  emu.enter = enter;
  emu.call = call;
  emu.shared_lo = reinterpret_cast<uintptr_t>(shared_begin());
  emu.shared_size = shared;
  emu.nthreads = shape.block.x * shape.block.y * shape.block.z;
  emu.threads.assign(emu.nthreads, Thread{});
  blockDim = shape.block;
  gridDim = shape.grid;
  if (stacks_need_cleaning && __asan_unpoison_memory_region) {
    for (unsigned i = 0; i < emu.nthreads; ++i) __asan_unpoison_memory_region(stacks.get(i), kStackSize);
    stacks_need_cleaning = false;
  }
  checks_begin_launch();
  const uint64_t blocks = uint64_t{shape.grid.x} * shape.grid.y * shape.grid.z;
  for (uint64_t k = 0; k < blocks && !emu.aborted; ++k) {
    const uint64_t b = block_at(k, blocks);
    if (block_selected(b)) run_one_block(b);
  }
  checks_end_launch();
  log_launch(blocks);
  emu.shape = nullptr;
  if (emu.aborted) {
    stacks_dirty();
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

}  // namespace fo_emu
