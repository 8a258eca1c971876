// A fixed pool of worker threads for CPU kernels. parallel_for splits [0, n) into chunks handed out through
// an atomic counter; the calling (stream) thread works too, then waits for the rest. One job at a time:
// only a stream's thread calls it.
// Waits spin for a few tens of microseconds before they sleep on the condition variable: ops come back to
// back (a worker's next job usually arrives within that time) and the other threads finish their last chunk
// within it, while waking a sleeping thread costs tens of microseconds on a VM, which a 100 us op feels.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>

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
  for (int i = 0; i < threads - 1; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

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
    ++generation_;
  }
  cv_.notify_all();
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
