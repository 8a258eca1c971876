// A fixed pool of worker threads for CPU kernels. parallel_for splits [0, n) into chunks handed out through
// an atomic counter; the calling (stream) thread works too, then waits for the rest. One job at a time:
// only a stream's thread calls it.
// Waits spin for a few tens of microseconds before they sleep on the condition variable: ops come back to
// back (a worker's next job usually arrives within that time) and the other threads finish their last chunk
// within it, while waking a sleeping thread costs tens of microseconds on a VM, which a 100 us op feels.
// A worker woken after an idle moment may be queued by Linux on the CPU of the thread that woke it (which
// keeps computing): the two then share one CPU until the load balancer moves one, milliseconds later. On the
// 2-core development VM a 77-key attention (1.4 ms on two threads) ran at the one-thread time for most calls
// after a 100 ms pause (156-187 against 287-301 GFLOP/s back to back). So a worker that finds itself on the
// caller's CPU moves off it: its affinity without that CPU (the kernel migrates it), then the old mask back
// (no lasting pinning). Two system calls, only when the threads share a CPU.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#ifdef __linux__
#include <sched.h>
#endif

#include "hypersd/ops.h"

namespace hsd {
namespace {
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
constexpr int kSpinUs = 50;

int current_cpu() {
#ifdef __linux__
  return sched_getcpu();
#else
  return -1;
#endif
}
// Off `cpu` when this thread runs on it and its affinity allows another (see the top of the file).
void move_off(int cpu) {
#ifdef __linux__
  if (cpu < 0 || sched_getcpu() != cpu) return;
  cpu_set_t all;
  if (sched_getaffinity(0, sizeof(all), &all) != 0 || !CPU_ISSET(cpu, &all) || CPU_COUNT(&all) < 2) return;
  cpu_set_t other = all;
  CPU_CLR(cpu, &other);
  if (sched_setaffinity(0, sizeof(other), &other) == 0) sched_setaffinity(0, sizeof(all), &all);
#else
  (void)cpu;
#endif
}
}  // namespace

// A throwing chunk must not kill a worker thread: keep the first exception for the caller.
void ThreadPool::run_chunk(const std::function<void(int64_t, int64_t)>& fn, int64_t b, int64_t e) {
  try {
    fn(b, e);
  } catch (...) {
    std::lock_guard<std::mutex> g(err_mu_);
    if (!err_) err_ = std::current_exception();
  }
}

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) threads = 1;
  try {
    for (int i = 0; i < threads - 1; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  } catch (const std::exception& e) {
    // The system refused a thread: stop the ones started (destroying joinable std::threads would call
    // std::terminate) and report it as an Error.
    const size_t started = workers_.size();
    stop_workers();
    throw Error("could not start " + std::to_string(threads - 1) + " pool threads (" + std::to_string(started) +
                " started): " + e.what());
  }
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::worker_loop(int) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* job;
    int64_t n, chunk;
    spin_until([&] { return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_acquire) != seen; },
               kSpinUs);
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      n = n_;
      chunk = chunk_;
    }
    move_off(caller_cpu_.load(std::memory_order_relaxed));
    for (;;) {
      int64_t b = next_.fetch_add(chunk);
      if (b >= n) break;
      run_chunk(*job, b, std::min(n, b + chunk));
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int threads = size();
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // About 4 chunks per thread for balance, never below grain.
  int64_t chunk = std::max<int64_t>(grain, (n + threads * 4 - 1) / (threads * 4));
  {
    std::lock_guard<std::mutex> g(mu_);
    job_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_.store(0);
    active_ = (int)workers_.size();
    caller_cpu_.store(current_cpu(), std::memory_order_relaxed);
    ++generation_;
  }
  cv_.notify_all();
#ifdef __linux__
  sched_yield();  // a worker queued on this CPU runs now, and moves off it (move_off)
#endif
  for (;;) {
    int64_t b = next_.fetch_add(chunk);
    if (b >= n) break;
    run_chunk(fn, b, std::min(n, b + chunk));
  }
  spin_until([&] { return active_.load(std::memory_order_acquire) == 0; }, kSpinUs);
  {
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return active_ == 0; });
    job_ = nullptr;
  }
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> g(err_mu_);
    std::swap(err, err_);
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace hsd
