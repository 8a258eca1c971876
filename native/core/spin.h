// Bounded spin-waits shared by the thread pool and the streams' workers: waking a thread that sleeps on a
// condition variable costs tens of microseconds on a VM (the waker's futex call, the sleeper's reschedule),
// which back-to-back small ops feel, so a waiter first polls for a few tens of microseconds.
#pragma once
#include <chrono>
#include <thread>

namespace hsd {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or about `us` microseconds passed; true when done() held.
template <class F>
bool spin_until(F done, int us) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() > end) return false;
  }
}

}  // namespace hsd
