// Fiber switching. x86-64 System V: ledit_fiber_switch(save, load) pushes the callee-saved registers, stores the
// stack pointer in *save, loads load as the stack pointer and pops the other context's registers. A new fiber's
// stack is laid out as if it had switched away at the start of ledit_fiber_start, which calls entry(argument).
#include "emulator/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace ledit {
namespace emulator {
namespace {

// Room for the deepest kernel frame plus the executor's checks and an exception's unwinding; pages are committed
// only when touched.
constexpr size_t kStackBytes = 256 * 1024;

}  // namespace

#if defined(__x86_64__)

extern "C" void ledit_fiber_switch(void** save, void* load);
extern "C" void ledit_fiber_start();

asm(R"(
  .text
  .globl ledit_fiber_switch
  .hidden ledit_fiber_switch
  .type ledit_fiber_switch, @function
ledit_fiber_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ledit_fiber_switch, .-ledit_fiber_switch

  .globl ledit_fiber_start
  .hidden ledit_fiber_start
  .type ledit_fiber_start, @function
ledit_fiber_start:
  movq %r13, %rdi
  callq *%r12
  ud2
  .size ledit_fiber_start, .-ledit_fiber_start
)");

void Fiber::start(Entry entry, void* argument) {
  if (stack_ == nullptr) allocate_stack();
  // Top of the stack, 16-byte aligned; then the frame ledit_fiber_switch pops: mxcsr/x87 control word, r15, r14,
  // r13 (argument), r12 (entry), rbx, rbp, and the return address ledit_fiber_start. At its first instruction the
  // stack pointer is 16-byte aligned, so the call inside it leaves the callee's frame aligned as the ABI requires.
  auto* top = reinterpret_cast<uint64_t*>(static_cast<char*>(stack_) + stack_bytes_);
  uint64_t* sp = top - 2;  // keeps rsp % 16 == 0 at ledit_fiber_start
  *--sp = reinterpret_cast<uint64_t>(&ledit_fiber_start);
  *--sp = 0;                                          // rbp
  *--sp = 0;                                          // rbx
  *--sp = reinterpret_cast<uint64_t>(entry);          // r12
  *--sp = reinterpret_cast<uint64_t>(argument);       // r13
  *--sp = 0;                                          // r14
  *--sp = 0;                                          // r15
  uint32_t control[2];
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  *--sp = static_cast<uint64_t>(control[0]) | (static_cast<uint64_t>(control[1]) << 32);
  context_ = sp;
}

void Fiber::resume() { ledit_fiber_switch(&caller_, context_); }
void Fiber::suspend() { ledit_fiber_switch(&context_, caller_); }

Fiber::~Fiber() {
  if (stack_ != nullptr) munmap(static_cast<char*>(stack_) - getpagesize(), stack_bytes_ + getpagesize());
}

#else  // ucontext

namespace {
struct Contexts {
  ucontext_t fiber, caller;
};
}  // namespace

void Fiber::start(Entry entry, void* argument) {
  if (stack_ == nullptr) allocate_stack();
  if (context_ == nullptr) context_ = new Contexts();
  auto* contexts = static_cast<Contexts*>(context_);
  getcontext(&contexts->fiber);
  contexts->fiber.uc_stack.ss_sp = stack_;
  contexts->fiber.uc_stack.ss_size = stack_bytes_;
  contexts->fiber.uc_link = nullptr;
  makecontext(&contexts->fiber, reinterpret_cast<void (*)()>(entry), 1, argument);
}

void Fiber::resume() {
  auto* contexts = static_cast<Contexts*>(context_);
  swapcontext(&contexts->caller, &contexts->fiber);
}
void Fiber::suspend() {
  auto* contexts = static_cast<Contexts*>(context_);
  swapcontext(&contexts->fiber, &contexts->caller);
}

Fiber::~Fiber() {
  delete static_cast<Contexts*>(context_);
  if (stack_ != nullptr) munmap(static_cast<char*>(stack_) - getpagesize(), stack_bytes_ + getpagesize());
}

#endif

void Fiber::allocate_stack() {
  const size_t page = static_cast<size_t>(getpagesize());
  void* mapping = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) throw std::bad_alloc();
  mprotect(mapping, page, PROT_NONE);  // a stack overflow faults instead of corrupting the next stack
  stack_ = static_cast<char*>(mapping) + page;
  stack_bytes_ = kStackBytes;
}

}  // namespace emulator
}  // namespace ledit
