// Cooperative fibers for the emulated threads of a block: each thread runs on
// its own stack until it reaches a barrier, a shuffle or its end, then switches
// back to the block's scheduler. On x86-64 a switch is a handful of pushes and
// pops (fiber.cpp); elsewhere it falls back to ucontext, whose swapcontext
// costs a system call per switch.
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace fo_emu {

struct FiberContext {
#if defined(__x86_64__)
  void* sp = nullptr;  // the saved stack pointer; registers live on the stack
#else
  ucontext_t uc;
#endif
};

// Prepares `ctx` so that the first switch to it calls entry(arg) on the stack
// [stack_lo, stack_lo + size). entry must never return: a finished fiber
// switches away for good.
void fiber_init(FiberContext* ctx, char* stack_lo, size_t size, void (*entry)(void*), void* arg);

// Saves the running context in `from` and resumes `to`.
void fiber_switch(FiberContext* from, FiberContext* to);

}  // namespace fo_emu
