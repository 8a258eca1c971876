// Op registry, attributes and the per-device streams.
//
// A stream is a FIFO drained by one worker thread. Freeing is stream-ordered (see Storage in tensor.h): a CUDA
// task holds shared_ptr references to its tensors' storages, so a tensor disposed from JS while its kernels are
// queued stays alive until they were launched; a CPU op task holds non-owning aliases instead and a number
// (its ticket), and the allocator reuses a freed block only for work that runs after every task that may
// still use it. A task that throws records "op '<name>' failed on <device> (<shapes>): <why>"
// as the stream's error; the next sync()/read() rethrows it and clears it, so the process keeps working.
// HYPERSD_SYNC=1 runs every op on the calling thread and throws at once (on CUDA it also waits for the
// kernel, so a fault names its op).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <sstream>

#include "device.h"
#include "hypersd/ops.h"

namespace hsd {

// ---------- attributes ----------
double Attrs::f(const std::string& k, double def) const {
  auto it = values.find(k);
  return it == values.end() || it->second.empty() ? def : it->second[0];
}
int64_t Attrs::i(const std::string& k, int64_t def) const { return (int64_t)f(k, (double)def); }
double Attrs::f(const std::string& k) const {
  auto it = values.find(k);
  if (it == values.end() || it->second.empty()) throw Error("missing attribute '" + k + "'");
  return it->second[0];
}
int64_t Attrs::i(const std::string& k) const { return (int64_t)f(k); }
std::vector<int64_t> Attrs::ints(const std::string& k) const {
  auto it = values.find(k);
  if (it == values.end()) throw Error("missing attribute '" + k + "'");
  std::vector<int64_t> r;
  for (double v : it->second) r.push_back((int64_t)v);
  return r;
}

// ---------- registry ----------
OpRegistry& OpRegistry::get() {
  static OpRegistry* r = [] {
    auto* reg = new OpRegistry();
    register_cpu_kernels(*reg);
    register_cuda_kernels(*reg);
    return reg;
  }();
  return *r;
}
void OpRegistry::add_cpu(const std::string& name, Kernel k, bool f32_only) {
  auto& d = ops_[name];
  d.name = name;
  d.cpu = k;
  d.cpu_f32_only = f32_only;
}
void OpRegistry::add_cuda(const std::string& name, Kernel k) {
  auto& d = ops_[name];
  d.name = name;
  d.cuda = k;
}
const OpDef* OpRegistry::find(const std::string& name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : &it->second;
}
std::vector<const OpDef*> OpRegistry::all() const {
  std::vector<const OpDef*> v;
  for (auto& kv : ops_) v.push_back(&kv.second);
  return v;
}

// ---------- dtype widening around f32-only CPU kernels ----------
namespace {
bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

// dtype conversion between two contiguous tensors of the same size: the `cast` kernel itself.
void convert_contiguous(const Tensor& src, const Tensor& dst, ThreadPool* pool) {
  static const OpDef* cast = OpRegistry::get().find("cast");
  std::vector<Tensor> in{src}, out{dst};
  Attrs none;
  OpContext ctx{in, out, none, pool, nullptr};
  cast->cpu(ctx);
}

// A task's failure whose message already names the task (see Stream::enqueue).
struct TaskFailed : Error {
  using Error::Error;
};

std::string describe_call(const std::string& op, Device d, const std::vector<Tensor>& in,
                          const std::vector<Tensor>& out) {
  std::ostringstream os;
  os << "op '" << op << "' on " << device_name(d) << " (inputs ";
  for (size_t i = 0; i < in.size(); ++i) os << (i ? ", " : "") << in[i].describe();
  os << "; outputs ";
  for (size_t i = 0; i < out.size(); ++i) os << (i ? ", " : "") << out[i].describe();
  os << ")";
  return os.str();
}
}  // namespace

void run_op_now(const OpDef& def, Device d, const std::vector<Tensor>& in, const std::vector<Tensor>& out,
                const Attrs& attrs, ThreadPool* pool, void* cuda_stream) {
  if (d == Device::CUDA) {
    if (!def.cuda) throw Error("op '" + def.name + "' has no CUDA kernel");
    OpContext ctx{in, out, attrs, pool, cuda_stream};
    def.cuda(ctx);
    dev::cuda_check_last(def.name.c_str());
    return;
  }
  if (!def.cpu) throw Error("op '" + def.name + "' has no CPU kernel");
  bool strided_ok = def.name == "copy";
  bool need = false;
  for (auto& t : in) need |= (def.cpu_f32_only && is_half(t.dtype)) || (!strided_ok && !t.is_contiguous());
  for (auto& t : out) need |= (def.cpu_f32_only && is_half(t.dtype));
  if (!need) {
    OpContext ctx{in, out, attrs, pool, nullptr};
    def.cpu(ctx);
    return;
  }
  static const OpDef* copy_op = OpRegistry::get().find("copy");
  std::vector<Tensor> in2, out2;
  for (auto& t : in) {
    Tensor c = t;
    if (!strided_ok && !t.is_contiguous()) {
      c = empty(t.shape, t.dtype, Device::CPU);
      std::vector<Tensor> a{t}, b{c};
      OpContext cc{a, b, attrs, pool, nullptr};
      copy_op->cpu(cc);
    }
    if (def.cpu_f32_only && is_half(c.dtype)) {
      Tensor w = empty(c.shape, DType::F32, Device::CPU);
      convert_contiguous(c, w, pool);
      c = w;
    }
    in2.push_back(c);
  }
  bool reads_out = attrs.f("beta", 0.0) != 0.0;
  for (auto& t : out) {
    if (def.cpu_f32_only && is_half(t.dtype)) {
      Tensor w = empty(t.shape, DType::F32, Device::CPU);
      if (reads_out) convert_contiguous(t, w, pool);
      out2.push_back(w);
    } else {
      out2.push_back(t);
    }
  }
  OpContext ctx{in2, out2, attrs, pool, nullptr};
  def.cpu(ctx);
  for (size_t i = 0; i < out.size(); ++i)
    if (out2[i].storage != out[i].storage) convert_contiguous(out2[i], out[i], pool);
}

// ---------- streams ----------
int default_threads() {
  if (const char* e = std::getenv("HYPERSD_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(e, &end, 10);
    if (end == e || *end != '\0' || n < 1 || n > kMaxThreads)
      throw Error("HYPERSD_THREADS must be a whole number of threads from 1 to " + std::to_string(kMaxThreads) +
                  ", got '" + e + "'");
    return (int)n;
  }
  return available_cpus();
}

Stream::Stream(Device d) : device_(d) {
  const char* s = std::getenv("HYPERSD_SYNC");
  sync_mode_ = s && std::string(s) == "1";
  if (d == Device::CUDA) {
    std::string why;
    if (!dev::cuda_init(&why)) throw Error("cuda is not available: " + why);
    cuda_stream_ = dev::cuda_stream_create();
  }
  pool_ = std::make_unique<ThreadPool>(d == Device::CPU ? default_threads() : 1);
  if (!sync_mode_) thread_ = std::thread([this] { loop(); });
}

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Stream::set_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw Error("set_threads: threads must be from 1 to " + std::to_string(kMaxThreads) + ", got " + std::to_string(n));
  // The pool is replaced in stream order by the stream's own worker, so an op that another thread (a
  // worker_threads Worker) enqueues meanwhile never runs on a pool being destroyed.
  enqueue_task("set_threads", [this, n] { pool_ = std::make_unique<ThreadPool>(n); });
  sync();
}

void Stream::run_task(Task& t) {
  try {
    t.fn();
  } catch (const TaskFailed& e) {  // the message names the task already
    std::lock_guard<std::mutex> g(mu_);
    record_error(t.client, e.what());
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> g(mu_);
    record_error(t.client, t.what + " failed: " + e.what());
  } catch (...) {
    std::lock_guard<std::mutex> g(mu_);
    record_error(t.client, t.what + " failed with an unknown exception");
  }
}

void Stream::loop() {
  for (;;) {
    Task t;
    {
      // An empty queue: spin a few microseconds before sleeping on the condition variable. JS enqueues a small
      // op every ~4-6 us; a worker that went to sleep each time cost a futex wake in the enqueue and a context
      // switch per op (~20% of bench/op_floor's samples in the kernel's scheduler). 10 us (HYPERSD_STREAM_SPIN_US,
      // 0 turns it off): CPU op floor 5.45-5.86 -> 4.39-4.61 us alternated, large ops unchanged.
      static const int spin_us = [] {
        const char* e = std::getenv("HYPERSD_STREAM_SPIN_US");
        return e ? std::max(0, std::atoi(e)) : 10;
      }();
      if (spin_us > 0 && queued_.load(std::memory_order_relaxed) == 0) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
        while (queued_.load(std::memory_order_acquire) == 0 && !stop_.load(std::memory_order_relaxed)) {
#if defined(__x86_64__) || defined(__i386__)
          for (int i = 0; i < 32; ++i) __builtin_ia32_pause();
#else
          std::this_thread::yield();
#endif
          if (std::chrono::steady_clock::now() > end) break;
        }
      }
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      t = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
      busy_ = true;
    }
    run_task(t);
    const uint64_t ticket = t.ticket;
    if (ticket) cpu_tasks_note_completed(ticket);
    {
      // The task (its closure, tensors, attributes, mostly allocated by the enqueuing thread) is handed back to
      // be destroyed by the next enqueue or sync: freed here, each of its blocks went back to the other
      // thread's malloc arena under that arena's lock while that thread was allocating the next op (perf on
      // bench/op_floor: ~20% of the samples in futex waits and wakes of glibc's arena lock). sync() drops them
      // before it returns, so memory stats stay exact at sync.
      std::lock_guard<std::mutex> g(mu_);
      done_.push_back(std::move(t));
      busy_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
    }
  }
}

// Moves the finished tasks out (mu_ held) for the caller to destroy after unlocking; done_ keeps its capacity,
// so the worker's next push_back allocates nothing.
void Stream::take_done(std::vector<Task>& dead) {
  if (done_.empty()) return;
  dead.reserve(done_.size());
  for (auto& t : done_) dead.push_back(std::move(t));
  done_.clear();
}

void Stream::enqueue_task(std::string what, std::function<void()> fn) {
  enqueue_task(std::move(what), std::move(fn), nullptr);
}

void Stream::enqueue_task(std::string what, std::function<void()> fn, const std::function<void(uint64_t)>& numbered) {
  Task t{std::move(what), std::move(fn)};
  t.client = current_client();
  if (sync_mode_) {
    run_task(t);
    if (device_ == Device::CUDA) {
      // Wait for the kernel too, so that a fault (illegal address, launch failure) is reported against the
      // op that caused it, not at some later sync.
      try {
        dev::cuda_stream_sync(cuda_stream_);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> g(mu_);
        record_error(t.client, t.what + " failed on the GPU: " + e.what());
      }
    }
    std::string err;
    {
      std::lock_guard<std::mutex> g(mu_);
      err = take_error(t.client);
    }
    if (!err.empty()) throw Error(err);
    return;
  }
  std::vector<Task> dead;  // destroyed on return, after the lock
  {
    std::lock_guard<std::mutex> g(mu_);
    take_done(dead);
    if (device_ == Device::CPU) {
      t.ticket = ++tickets_;
      if (numbered) numbered(t.ticket);  // under the lock: numbers are marked in queue order
    }
    queue_.push_back(std::move(t));
    queued_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_one();
}

void Stream::enqueue(const std::string& op, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs) {
  const OpDef* def = OpRegistry::get().find(op);
  if (!def) throw Error("unknown op '" + op + "'");
  enqueue(*def, std::move(in), std::move(out), std::move(attrs));
}

void Stream::enqueue(const OpDef& op_def, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs) {
  const OpDef* def = &op_def;
  const std::string& op = def->name;
  if (device_ == Device::CPU && !def->cpu) throw Error("op '" + op + "' has no CPU kernel");
  if (device_ == Device::CUDA && !def->cuda) throw Error("op '" + op + "' has no CUDA kernel");
  for (auto& t : in)
    if (t.storage && t.device() != device_)
      throw Error(describe_call(op, device_, in, out) + ": an input is on another device");
  for (auto& t : out)
    if (t.device() != device_) throw Error(describe_call(op, device_, in, out) + ": an output is on another device");
  // The task's description (op, shapes, dtypes) names it in error messages. It is built only when the task
  // fails (TaskFailed below): built for every call, its ostringstream was a third of a small op's enqueue on
  // the CPU. Under HYPERSD_SYNC=1 a CUDA task builds it at once, for a fault that the stream sync after the task
  // finds (asynchronously such a fault surfaces at a later sync and cannot be pinned on one op).
  std::string what = sync_mode_ && device_ != Device::CPU ? describe_call(op, device_, in, out) : std::string();
  // On the CPU stream the task keeps aliases, not owners, and marks each storage with its number: the memory may
  // return to the allocator while the task is queued, for work that runs after it (stream-ordered reuse, see
  // Storage). A CUDA task owns its tensors until it ran.
  std::vector<StoragePtr> owners;
  if (device_ == Device::CPU && !sync_mode_)
    for (auto* v : {&in, &out})
      for (auto& t : *v)
        if (t.storage)
          if (StoragePtr alias = t.storage->borrow()) {
            owners.push_back(std::move(t.storage));
            t.storage = std::move(alias);
          }
  auto task = [this, def, in = std::move(in), out = std::move(out), attrs = std::move(attrs)] {
    std::string msg, root;  // root: the failure the outputs carry on (the first op's, however long the chain)
    try {
      for (size_t i = 0; i < in.size(); ++i)
        if (in[i].storage && failed_why(*in[i].storage, &root))
          throw Error("input " + std::to_string(i) + " was written by an op that failed (" + root + ")");
      run_op_now(*def, device_, in, out, attrs, pool_.get(), cuda_stream_);
      return;
    } catch (const std::out_of_range& e) {  // e.g. a kernel's in.at(i) / out.at(i) past what the caller gave
      msg = describe_call(def->name, device_, in, out) +
            " failed: something the kernel expects is missing (too few inputs or outputs, or dimensions): " + e.what();
    } catch (const std::exception& e) {
      msg = describe_call(def->name, device_, in, out) + " failed: " + e.what();
    } catch (...) {
      msg = describe_call(def->name, device_, in, out) + " failed with an unknown exception";
    }
    for (auto& t : out)
      if (t.storage) mark_failed(*t.storage, root.empty() ? msg : root);
    throw TaskFailed(msg);
  };
  enqueue_task(std::move(what), std::move(task), [&](uint64_t ticket) {
    for (auto& s : owners) s->last_use.store(ticket, std::memory_order_release);
  });
}

void Stream::sync() {
  {
    std::vector<Task> dead;
    {
      std::unique_lock<std::mutex> lk(mu_);
      idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
      take_done(dead);
    }
  }  // the finished tasks' tensors are released here, before sync returns
  if (device_ == Device::CUDA) {
    try {
      dev::cuda_stream_sync(cuda_stream_);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> g(mu_);
      record_error(current_client(), std::string("cuda stream: ") + e.what());  // (a device fault: not one client's)
    }
  }
  std::string err;
  {
    std::lock_guard<std::mutex> g(mu_);
    err = take_error(current_client());
  }
  if (!err.empty()) throw Error(err);
}

void Stream::record_error(uint32_t client, const std::string& msg) {
  std::string& e = errors_[client];
  if (e.empty()) e = msg;
}

std::string Stream::take_error(uint32_t client) {
  auto it = errors_.find(client);
  if (it == errors_.end()) return std::string();
  std::string e = std::move(it->second);
  errors_.erase(it);
  return e;
}

namespace {
std::atomic<uint32_t> g_next_client{0};
thread_local uint32_t t_client = 0;
}  // namespace

uint32_t current_client() {
  if (t_client == 0) t_client = g_next_client.fetch_add(1, std::memory_order_relaxed) + 1;
  return t_client;
}

void set_client(uint32_t client) { t_client = client; }

uint32_t new_client() { return g_next_client.fetch_add(1, std::memory_order_relaxed) + 1; }

void Stream::forget_client(uint32_t client) {
  enqueue_task("end of an error scope", [this, client] {
    std::lock_guard<std::mutex> g(mu_);
    errors_.erase(client);
  });
}

std::vector<uint8_t> Stream::read(const Tensor& t) {
  auto result = std::make_shared<std::vector<uint8_t>>(t.nbytes());
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  Tensor src = t;
  enqueue_task("read " + t.describe(), [src, result, done] {
    struct Signal {
      std::shared_ptr<std::promise<void>> p;
      ~Signal() { p->set_value(); }
    } sig{done};
    std::string why;
    if (src.storage && failed_why(*src.storage, &why))
      throw TaskFailed("reading " + src.describe() + ": it was written by an op that failed (" + why + ")");
    copy_to_host(src, result->data());
  });
  fut.wait();
  sync();  // rethrows an error recorded by this read or by any earlier op
  return std::move(*result);
}

namespace {
// Function-local, as before end_client: the streams (and their worker threads) are destroyed at exit before the
// singletons their tasks use that were made before them.
struct Streams {
  std::mutex mu;
  std::unique_ptr<Stream> s[2];
};
Streams& streams() {
  static Streams st;
  return st;
}
}  // namespace

Stream& stream(Device d) {
  Streams& st = streams();
  std::lock_guard<std::mutex> g(st.mu);
  auto& s = st.s[(int)d];
  if (!s) s = std::make_unique<Stream>(d);
  return *s;
}

void end_client(uint32_t client) {
  Streams& st = streams();
  for (int d = 0; d < 2; ++d) {
    Stream* s;
    {
      std::lock_guard<std::mutex> g(st.mu);
      s = st.s[d].get();  // a stream never made has no errors (and CUDA's would throw without a GPU)
    }
    if (s) s->forget_client(client);
  }
}

void enqueue(const std::string& op, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs) {
  if (out.empty()) throw Error("op '" + op + "' called without outputs");
  Device d = out[0].device();
  stream(d).enqueue(op, std::move(in), std::move(out), std::move(attrs));
}
void enqueue(const OpDef& def, std::vector<Tensor> in, std::vector<Tensor> out, Attrs attrs) {
  if (out.empty()) throw Error("op '" + def.name + "' called without outputs");
  Device d = out[0].device();
  stream(d).enqueue(def, std::move(in), std::move(out), std::move(attrs));
}

// ---------- host copies ----------
// An empty tensor copies nothing (its data pointer, and the caller's, may be null: memcpy's arguments must not be,
// whatever the size).
void copy_to_host(const Tensor& src, void* dst) {
  if (!src.is_contiguous()) throw Error("copy_to_host needs a contiguous tensor, got " + src.describe());
  if (src.nbytes() == 0) return;
  if (src.device() == Device::CPU) {
    std::memcpy(dst, src.raw(), src.nbytes());
    return;
  }
  void* s = stream(Device::CUDA).cuda_stream();
  dev::cuda_memcpy_d2h(dst, src.raw(), src.nbytes(), s);
  dev::cuda_stream_sync(s);
}

void copy_from_host(const Tensor& dst, const void* src) {
  if (dst.nbytes() == 0) return;
  if (dst.device() == Device::CPU) {
    std::memcpy(dst.raw(), src, dst.nbytes());
    return;
  }
  void* s = stream(Device::CUDA).cuda_stream();
  dev::cuda_memcpy_h2d(dst.raw(), src, dst.nbytes(), s);
  dev::cuda_stream_sync(s);
}

}  // namespace hsd
