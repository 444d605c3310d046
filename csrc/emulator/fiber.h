// Cooperative fibers for the executor: one per CUDA thread of a block, all on the calling CPU thread. A switch
// saves only the callee-saved registers (x86-64: a dozen instructions, see fiber.cpp); other architectures fall
// back to ucontext, which is correct but about 50x slower per switch.
#pragma once

#include <cstddef>

namespace ledit {
namespace emulator {

class Fiber {
 public:
  using Entry = void (*)(void* argument);

  Fiber() = default;
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // (Re)starts the fiber at entry(argument) on its own stack (allocated once, with a guard page below it). The
  // entry must never return: it switches away for good when done.
  void start(Entry entry, void* argument);
  // Runs the fiber from where it last switched away until it next switches back; returns then.
  void resume();
  // Called on the fiber: back to whoever resumed it.
  void suspend();

 private:
  void allocate_stack();

  void* stack_ = nullptr;  // mapping, guard page first
  size_t stack_bytes_ = 0;
  void* context_ = nullptr;  // the fiber's saved stack pointer (or ucontext)
  void* caller_ = nullptr;   // the resumer's saved stack pointer (or ucontext)
};

}  // namespace emulator
}  // namespace ledit
