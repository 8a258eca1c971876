// hypersd core: tensors, dtypes, devices and the caching allocator.
// This header is the public C++ face of the core; it has no N-API in it, so a plain C++ program can
// link libhypersd_core and use it (see examples/run_op.cpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <utility>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace hsd {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4 };
enum class Device : int { CPU = 0, CUDA = 1 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
DType dtype_from_name(const std::string& s);    // throws Error on an unknown name
Device device_from_name(const std::string& s);  // "cpu" | "cuda"

// Every failure inside the core is an hsd::Error; the stream turns it into a recorded message.
struct Error : std::runtime_error {
  explicit Error(const std::string& m) : std::runtime_error(m) {}
};

// The memory this process may use, in bytes: RAM + swap, or its cgroup's memory limit if lower; 0 when unknown
// (native/core/system.cpp). A single CPU tensor larger than this is refused with an Error.
double memory_limit_bytes();

// A device buffer owned through shared_ptr. Freeing is stream-ordered. On CUDA, kernels queued on the stream
// hold a reference, so the memory returns to the allocator's cache after the last queued launch, and later
// launches on the same stream may take it. On the CPU stream, queued op tasks hold only non-owning aliases
// (Storage::Borrow) and each storage remembers the last task that uses it (last_use, the task's number in
// enqueue order), so the memory returns to the cache the moment the last owner (a JS tensor, a C++ Tensor) lets
// go, even with those tasks still queued; the allocator then hands that block only to work that runs after
// them: to an allocation marked stream_ordered (an op output about to be enqueued, which the single in-order
// CPU worker runs later), or to any allocation once the stream has completed task last_use (a temporary that
// no task borrowed, e.g. the widened copy a kernel makes, is free for all at once). This keeps the CPU's peak
// memory that of eager execution however far JS runs ahead, and a block freed a moment ago (still in cache) is
// the first one reused.
struct Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  bool owned = true;
  std::atomic<uint64_t> last_use{0};  // CPU: the last enqueued task that borrows it (0: none)
  uint64_t id = 0;  // unique per allocation, shared by its aliases (mark_failed)
  // stream_ordered: the memory will be touched only by work enqueued on the device's stream after this call.
  Storage(size_t bytes, Device device, bool stream_ordered = false);
  // The non-owning alias of a CPU storage's memory that stream tasks hold (frees nothing): one per storage, made
  // with it and shared by every task that borrows it. The owner holds it, so it goes last and erases the failure
  // mark (mark_failed) then: a task's output that JS disposed before the task failed had kept its mark forever,
  // and every later failed_why on the locked path.
  std::shared_ptr<Storage> borrow() const { return alias_; }
  struct Borrow {};
  Storage(Borrow, const Storage& of) : ptr(of.ptr), bytes(of.bytes), device(of.device), owned(false), id(of.id) {}
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

 private:
  std::shared_ptr<Storage> alias_;  // a CPU storage's alias (borrow)
};
using StoragePtr = std::shared_ptr<Storage>;

// A storage that an op failed to write (the stream's task threw): reading it, or running an op that takes it
// as an input, is an Error naming that failure, not its stale or uninitialised bytes; the op's outputs are
// marked in turn. The mark lasts as long as the allocation (its owner and its alias share it). failed_why is
// one relaxed load while nothing has failed.
void mark_failed(const Storage& s, const std::string& why);
bool failed_why(const Storage& s, std::string* why);
int64_t failed_mark_count();  // the marks held now, process-wide (memory().failedMarks)

// A tensor's shape or strides: up to kInline dims held in place (a Tensor copy allocates nothing for them: an
// op's enqueue copies its tensors several times), more on the heap. Reads like the std::vector<int64_t> it
// replaced (size, [], begin/end, data, ==) and converts to and from one.
class Dims {
 public:
  static constexpr size_t kInline = 8;
  Dims() = default;
  Dims(std::initializer_list<int64_t> l) { assign(l.begin(), l.size()); }
  Dims(const std::vector<int64_t>& v) { assign(v.data(), v.size()); }  // NOLINT: implicit, as a vector
  Dims(size_t n, int64_t v) {
    resize(n);
    for (size_t i = 0; i < n; ++i) data()[i] = v;
  }
  template <class It, class = decltype(*std::declval<It>())>
  Dims(It b, It e) {
    resize((size_t)std::distance(b, e));
    for (size_t i = 0; b != e; ++b, ++i) data()[i] = (int64_t)*b;
  }
  Dims(const Dims& o) { assign(o.data(), o.size()); }
  Dims& operator=(const Dims& o) {
    if (this != &o) assign(o.data(), o.size());
    return *this;
  }
  Dims& operator=(const std::vector<int64_t>& v) {
    assign(v.data(), v.size());
    return *this;
  }
  Dims& operator=(std::initializer_list<int64_t> l) {
    assign(l.begin(), l.size());
    return *this;
  }
  operator std::vector<int64_t>() const { return std::vector<int64_t>(begin(), end()); }  // NOLINT: implicit

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t* data() { return n_ <= kInline ? buf_ : heap_.data(); }
  const int64_t* data() const { return n_ <= kInline ? buf_ : heap_.data(); }
  int64_t& operator[](size_t i) { return data()[i]; }
  const int64_t& operator[](size_t i) const { return data()[i]; }
  int64_t* begin() { return data(); }
  int64_t* end() { return data() + n_; }
  const int64_t* begin() const { return data(); }
  const int64_t* end() const { return data() + n_; }
  int64_t& front() { return data()[0]; }
  const int64_t& front() const { return data()[0]; }
  int64_t& back() { return data()[n_ - 1]; }
  const int64_t& back() const { return data()[n_ - 1]; }
  void clear() { resize(0); }
  void push_back(int64_t v) {
    resize(n_ + 1);
    back() = v;
  }
  // New dims are 0; the first min(old, n) keep their values.
  void resize(size_t n) {
    if (n > kInline) {
      if (n_ <= kInline) heap_.assign(buf_, buf_ + n_);
      heap_.resize(n, 0);
    } else {
      if (n_ > kInline) std::copy(heap_.begin(), heap_.begin() + n, buf_);
      else
        for (size_t i = n_; i < n; ++i) buf_[i] = 0;
      heap_.clear();
    }
    n_ = n;
  }

  friend bool operator==(const Dims& a, const Dims& b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); }
  friend bool operator!=(const Dims& a, const Dims& b) { return !(a == b); }
  friend bool operator==(const Dims& a, const std::vector<int64_t>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend bool operator==(const std::vector<int64_t>& a, const Dims& b) { return b == a; }
  friend bool operator!=(const Dims& a, const std::vector<int64_t>& b) { return !(a == b); }
  friend bool operator!=(const std::vector<int64_t>& a, const Dims& b) { return !(a == b); }

 private:
  void assign(const int64_t* p, size_t n) {
    if (n > kInline) {
      heap_.assign(p, p + n);
    } else {
      heap_.clear();
      for (size_t i = 0; i < n; ++i) buf_[i] = p[i];
    }
    n_ = n;
  }
  size_t n_ = 0;
  int64_t buf_[kInline] = {};
  std::vector<int64_t> heap_;  // used when n_ > kInline
};

struct Tensor {
  StoragePtr storage;
  int64_t offset = 0;  // in elements
  Dims shape;
  Dims strides;  // in elements
  DType dtype = DType::F32;

  Device device() const { return storage ? storage->device : Device::CPU; }
  int64_t numel() const;
  int64_t dim() const { return (int64_t)shape.size(); }
  int64_t size(int64_t i) const { return shape[i < 0 ? i + dim() : i]; }
  bool is_contiguous() const;
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype); }
  void* raw() const { return (char*)storage->ptr + offset * (int64_t)dtype_size(dtype); }
  // The CPU kernels' typed access checks the dtype (a wrong one from the low-level runOp had been read as other
  // bits): float is f32, int32_t i32, int64_t i64, uint16_t f16 / bf16 bits; other types are raw bytes. (Not in
  // CUDA translation units, whose host code hands device pointers on in the kernels' own types.)
  template <class T> T* data() const {
#ifndef __CUDACC__
    using U = typename std::remove_cv<T>::type;
    if constexpr (std::is_same<U, float>::value) { if (dtype != DType::F32) bad_data_type("f32"); }
    else if constexpr (std::is_same<U, int32_t>::value) { if (dtype != DType::I32) bad_data_type("i32"); }
    else if constexpr (std::is_same<U, int64_t>::value) { if (dtype != DType::I64) bad_data_type("i64"); }
    else if constexpr (std::is_same<U, uint16_t>::value) { if (dtype != DType::F16 && dtype != DType::BF16) bad_data_type("f16 / bf16"); }
#endif
    return (T*)raw();
  }
  [[noreturn]] void bad_data_type(const char* want) const;
  std::string describe() const;  // "f32[2,77,768]@cpu"
};

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);
Dims contiguous_strides(const Dims& shape);
// stream_ordered: see Storage (the binding allocates op outputs this way; host writes need the default).
Tensor empty(const std::vector<int64_t>& shape, DType dtype, Device device, bool stream_ordered = false);
// A view sharing storage (reshape of a contiguous tensor, or explicit strides/offset).
Tensor view(const Tensor& t, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides = {},
            int64_t offset = -1);

// Caching allocator statistics, per device.
struct MemoryStats {
  int64_t allocated_bytes = 0;  // in live storages
  int64_t cached_bytes = 0;     // freed, kept for reuse
  int64_t peak_bytes = 0;
  int64_t live_storages = 0;
};
MemoryStats memory_stats(Device d);
void empty_cache(Device d);  // frees the cached blocks no queued task may still use
void reset_peak(Device d);   // the peak of bytes in use starts again from the bytes in use now

// Stream-ordered reuse on the CPU: tasks are numbered 1, 2, ... in enqueue order and the worker runs them in
// that order; engine.cpp reports each one done here (the allocator reads it).
void cpu_tasks_note_completed(uint64_t ticket);

// CUDA availability: returns true when a device is usable; otherwise fills why (built without CUDA, no GPU, driver error).
bool cuda_available(std::string* why = nullptr);

// f16 / bf16 conversions (round to nearest even), shared by kernels and the binding.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
inline float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

}  // namespace hsd
