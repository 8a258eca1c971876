// hypersd core: the op table, op attributes, streams and the thread pool.
//
// An op is a name in one table with a CPU kernel and, where built, a CUDA kernel of the same signature.
// Callers allocate outputs (shape inference lives in the TypeScript wrappers and in ops' own checks), then
// enqueue(op, inputs, outputs, attrs) on the device's stream: the call returns at once; the stream's
// worker thread runs the kernel. A kernel reports failure by throwing hsd::Error; the stream records it
// (op name, shapes, device) and the next sync point rethrows it. The full op list, with the semantics of
// every input, output and attribute, is in native/include/hypersd/OPS.md.
#pragma once
#include <atomic>
#include <condition_variable>
#include <exception>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensor.h"

namespace hsd {

// Attributes: named lists of numbers (a scalar is a list of one).
struct Attrs {
  std::map<std::string, std::vector<double>> values;
  bool has(const std::string& k) const { return values.count(k) != 0; }
  double f(const std::string& k, double def) const;
  int64_t i(const std::string& k, int64_t def) const;
  double f(const std::string& k) const;   // required; throws naming the key
  int64_t i(const std::string& k) const;  // required
  std::vector<int64_t> ints(const std::string& k) const;
  void set(const std::string& k, double v) { values[k] = {v}; }
  void set(const std::string& k, std::vector<double> v) { values[k] = std::move(v); }
};

class ThreadPool;

struct OpContext {
  const std::vector<Tensor>& in;
  const std::vector<Tensor>& out;
  const Attrs& attrs;
  ThreadPool* pool;    // CPU kernels
  void* cuda_stream;   // cudaStream_t for CUDA kernels
};
using Kernel = void (*)(const OpContext&);

struct OpDef {
  std::string name;
  Kernel cpu = nullptr;
  Kernel cuda = nullptr;
  // CPU kernel computes in f32 only: the engine widens f16/bf16 inputs into f32 temporaries and narrows the
  // f32 results into f16/bf16 outputs around it. Ops that take half weights natively set this false.
  bool cpu_f32_only = true;
};

class OpRegistry {
 public:
  static OpRegistry& get();
  void add_cpu(const std::string& name, Kernel k, bool f32_only = true);
  void add_cuda(const std::string& name, Kernel k);
  const OpDef* find(const std::string& name) const;
  std::vector<const OpDef*> all() const;

 private:
  std::map<std::string, OpDef> ops_;
};

// Fixed-size pool; parallel_for is called by one stream thread at a time.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const { return (int)workers_.size() + 1; }
  // Runs fn(begin, end) over [0, n) in chunks of at least grain; the calling thread takes part.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int id);
  void stop_workers();
  void run_chunk(const std::function<void(int64_t, int64_t)>& fn, int64_t b, int64_t e);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0, chunk_ = 0;
  std::atomic<int64_t> next_{0};
  std::mutex err_mu_;
  std::exception_ptr err_;
  // Written under mu_; read without it by the short spins before sleeping (see threadpool.cpp).
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> caller_cpu_{-1};  // the CPU the job's caller ran on when it posted the job (Linux)
};

// Whose errors a sync reports. Every thread that enqueues work is a client with its own number (given on first
// use); a task's error goes to the client that enqueued it and is thrown by that client's next sync or read, not
// by whichever thread syncs first (a Worker's sync had rejected with the main thread's embedding error). Threads
// that wait on another's behalf (the Node binding's promise workers on libuv's pool) adopt its number.
// A caller that runs several jobs on one thread (the Node binding: a pipeline's generate beside the caller's own
// ops) gives each job a number of its own (new_client) and sets it (set_client) while the job enqueues and
// syncs; end_client(c) drops, in stream order, c's errors not yet thrown (its failed tensors stay failed).
uint32_t current_client();
void set_client(uint32_t client);
uint32_t new_client();
void end_client(uint32_t client);

// One ordered queue per device, drained by a worker thread.
class Stream {
 public:
  explicit Stream(Device d);
  ~Stream();
  Device device() const { return device_; }
  // Enqueue a kernel call. Throws at once only for an unknown op or missing kernel for this device.
  void enqueue(const std::string& op, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs);
  // The same with the op already looked up (OpRegistry::find): no name lookup per call.
  void enqueue(const OpDef& def, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs);
  // Enqueue an arbitrary task (copies, host callbacks); it may throw hsd::Error. Tensors it captures keep
  // their storage alive until it ran.
  void enqueue_task(std::string what, std::function<void()> fn);
  // Blocks until everything enqueued so far has run; rethrows (and clears) the first error recorded for this
  // thread's client (current_client()).
  void sync();
  // Copy a tensor's bytes into host memory after all queued work; rethrows a recorded error.
  std::vector<uint8_t> read(const Tensor& t);
  ThreadPool* pool() { return pool_.get(); }
  void set_threads(int n);
  // After everything enqueued so far: forget client's error not yet thrown (see end_client).
  void forget_client(uint32_t client);
  void* cuda_stream() const { return cuda_stream_; }

 private:
  struct Task {
    std::string what;
    std::function<void()> fn;
    uint64_t ticket = 0;  // CPU: its number in enqueue order (see Storage in tensor.h)
    uint32_t client = 0;  // who enqueued it (current_client()): its error goes to that client's next sync
  };
  void loop();
  void run_task(Task& t);
  // numbered(ticket) runs under the queue's lock once the task has its number (CPU), before it is queued.
  void enqueue_task(std::string what, std::function<void()> fn, const std::function<void(uint64_t)>& numbered);
  void take_done(std::vector<Task>& dead);  // mu_ held
  Device device_;
  std::unique_ptr<ThreadPool> pool_;
  void* cuda_stream_ = nullptr;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Task> queue_;
  std::atomic<int64_t> queued_{0};      // queue_.size(), readable without mu_ (the worker's spin)
  // Tasks the worker has run, destroyed by the next enqueue's (or sync's) thread: see Stream::loop.
  std::vector<Task> done_;
  bool busy_ = false, sync_mode_ = false;
  std::atomic<bool> stop_{false};  // set under mu_; atomic so the worker's spin can read it without the lock
  uint64_t tickets_ = 0;
  std::map<uint32_t, std::string> errors_;  // per client, the first error not yet thrown (mu_)
  void record_error(uint32_t client, const std::string& msg);  // mu_ held
  std::string take_error(uint32_t client);                     // mu_ held
};

// The process-wide streams (created on first use). stream(CUDA) throws a clear Error without a GPU.
Stream& stream(Device d);
// Runs an op's kernel right here on the calling thread (used by the streams, by HYPERSD_SYNC=1 and by
// kernels that compose other ops).
void run_op_now(const OpDef& def, Device d, const std::vector<Tensor>& in, const std::vector<Tensor>& out,
                const Attrs& attrs, ThreadPool* pool, void* cuda_stream);
// Convenience: enqueue on the stream of the first output's device.
void enqueue(const std::string& op, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs = {});
void enqueue(const OpDef& def, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs = {});
// The most threads a CPU stream's pool takes (HYPERSD_THREADS, Stream::set_threads).
constexpr int kMaxThreads = 1024;
// The CPU stream's thread count: HYPERSD_THREADS (an Error if it is not a number from 1 to kMaxThreads), else
// available_cpus().
int default_threads();
// CPUs this process may run on: its affinity mask (taskset, cpusets), capped by its cgroup's CPU quota rounded
// up (cgroup v2 cpu.max, v1 cpu.cfs_quota_us): a container limited to 2 CPUs on a 64-core host gets 2 threads,
// not 64 that the quota would throttle.
int available_cpus();
// The last-level cache a core sees, in bytes (Linux sysfs: the highest cache index of cpu0; 32 MiB when it does
// not say): group norm streams its output past twice it, Winograd picks its variant by it.
size_t last_level_cache_bytes();

// Registration entry points implemented by native/cpu and native/cuda.
void register_cpu_kernels(OpRegistry& r);
void register_cuda_kernels(OpRegistry& r);  // no-op when built without CUDA

// Device-side copies used by the binding and by cast/to(): host<->device and device<->device.
void copy_to_host(const Tensor& src, void* dst);     // synchronous; call on the stream thread
void copy_from_host(const Tensor& dst, const void* src);

}  // namespace hsd
