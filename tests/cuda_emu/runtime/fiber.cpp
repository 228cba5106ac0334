// See fiber.h.
#include "fiber.h"

#include <cstdint>

#if defined(__x86_64__)

// fo_emu_switch(&from->sp, to->sp): pushes the callee-saved registers and the
// SSE/x87 control words (the System V ABI's callee-saved state), swaps stack
// pointers, pops the other fiber's. fo_emu_fiber_start is where a new fiber's
// first switch returns to: it calls entry(arg), kept in r13 and r12.
asm(R"(
  .text
  .p2align 4
  .globl fo_emu_switch
  .hidden fo_emu_switch
  .type fo_emu_switch,@function
fo_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fo_emu_switch, .-fo_emu_switch

  .p2align 4
  .globl fo_emu_fiber_start
  .hidden fo_emu_fiber_start
  .type fo_emu_fiber_start,@function
fo_emu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size fo_emu_fiber_start, .-fo_emu_fiber_start
)");

extern "C" void fo_emu_switch(void** save_sp, void* new_sp);
extern "C" void fo_emu_fiber_start();

namespace fo_emu {

void fiber_init(FiberContext* ctx, char* stack_lo, size_t size, void (*entry)(void*), void* arg) {
  // The frame fo_emu_switch pops, from the lowest address: x87 control word
  // (8-byte slot), MXCSR (8-byte slot), r15, r14, r13 (entry), r12 (arg), rbx,
  // rbp (0: the end of the frame-pointer chain), and the return address. After
  // the ret the stack pointer is the (16-byte aligned) top, so the call in
  // fo_emu_fiber_start enters entry() aligned as the ABI requires.
  auto top = reinterpret_cast<uintptr_t>(stack_lo + size) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top) - 9;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  frame[0] = fpcw;
  frame[1] = mxcsr;
  frame[2] = 0;                                   // r15
  frame[3] = 0;                                   // r14
  frame[4] = reinterpret_cast<uint64_t>(entry);   // r13
  frame[5] = reinterpret_cast<uint64_t>(arg);     // r12
  frame[6] = 0;                                   // rbx
  frame[7] = 0;                                   // rbp
  frame[8] = reinterpret_cast<uint64_t>(&fo_emu_fiber_start);
  ctx->sp = frame;
}

void fiber_switch(FiberContext* from, FiberContext* to) { fo_emu_switch(&from->sp, to->sp); }

}  // namespace fo_emu

#else  // ucontext

namespace fo_emu {
namespace {

// makecontext passes int arguments only: the pointers go in two halves.
void start(unsigned entry_hi, unsigned entry_lo, unsigned arg_hi, unsigned arg_lo) {
  auto entry = reinterpret_cast<void (*)(void*)>((uint64_t{entry_hi} << 32) | entry_lo);
  entry(reinterpret_cast<void*>((uint64_t{arg_hi} << 32) | arg_lo));
  __builtin_trap();
}

}  // namespace

void fiber_init(FiberContext* ctx, char* stack_lo, size_t size, void (*entry)(void*), void* arg) {
  getcontext(&ctx->uc);
  ctx->uc.uc_stack.ss_sp = stack_lo;
  ctx->uc.uc_stack.ss_size = size;
  ctx->uc.uc_link = nullptr;
  const auto e = reinterpret_cast<uint64_t>(entry);
  const auto a = reinterpret_cast<uint64_t>(arg);
  makecontext(&ctx->uc, reinterpret_cast<void (*)()>(&start), 4, static_cast<unsigned>(e >> 32),
              static_cast<unsigned>(e), static_cast<unsigned>(a >> 32), static_cast<unsigned>(a));
}

void fiber_switch(FiberContext* from, FiberContext* to) { swapcontext(&from->uc, &to->uc); }

}  // namespace fo_emu

#endif
