// Tensors, dtypes and the per-device caching allocator.
// The allocator keeps freed blocks in size buckets (rounded up to 512 B, or to 2 MiB past 1 MiB) for reuse;
// it counts live, cached and peak bytes per device. Storage destructors may run on any thread (a JS
// dispose, or a stream finishing the last task that held it), hence one mutex.
// Each cached CPU block carries a ticket: its storage's last_use, the last CPU task that may still use it (see
// Storage in tensor.h). A stream-ordered allocation takes any block; any other allocation (host writes, scratch
// inside a running task) and empty_cache only blocks whose ticket the stream has completed. Within a size the
// newest block is taken first: it is the one most likely still in cache. A CPU allocation of 64 MiB or more that
// the cache cannot serve first takes the cached blocks of that class out of reuse: freed at once when the stream
// is done with them, else when it completes their last reader. So RSS follows the live peak when tensors grow
// from one size class to the next.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "device.h"
#include "hypersd/tensor.h"

namespace hsd {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}
const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}
const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
DType dtype_from_name(const std::string& s) {
  if (s == "f32" || s == "float32") return DType::F32;
  if (s == "f16" || s == "float16") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "i32" || s == "int32") return DType::I32;
  if (s == "i64" || s == "int64") return DType::I64;
  throw Error("unknown dtype '" + s + "' (expected f32, f16, bf16, i32 or i64)");
}
Device device_from_name(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw Error("unknown device '" + s + "' (expected cpu or cuda)");
}

namespace {
struct Block {
  void* ptr;
  uint64_t ticket;
};
struct Pool {
  std::mutex mu;
  std::multimap<size_t, Block> free_blocks;  // equal sizes kept in the order freed
  // Large CPU blocks taken out of reuse but still read by queued tasks: freed once the stream completes their
  // ticket (cpu_tasks_note_completed). Counted in stats.cached_bytes until then.
  std::vector<std::pair<size_t, Block>> pending;
  std::atomic<uint64_t> pending_min{UINT64_MAX};  // the smallest ticket in pending
  MemoryStats stats;
};
std::atomic<uint64_t> g_cpu_completed{0};
uint64_t done_ticket(Device d) { return d == Device::CPU ? g_cpu_completed.load(std::memory_order_acquire) : 0; }
Pool& pool(Device d) {
  static Pool pools[2];
  return pools[(int)d];
}
// CPU blocks from this size on (mmap'd by malloc, so freeing returns them to the system) are released from the
// cache when a block of this class has to be allocated afresh (see Storage::Storage).
constexpr size_t kLargeBlock = size_t(64) << 20;
void release_cached(Device d);
void release_large_cpu();
void free_pending_cpu(uint64_t done);
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n <= (1u << 20)) return (n + 511) & ~size_t(511);
  return (n + (2u << 20) - 1) & ~size_t((2u << 20) - 1);
}
void* raw_alloc(Device d, size_t n) {
  if (d == Device::CPU) {
    void* p = nullptr;
    if (posix_memalign(&p, 64, n) != 0) return nullptr;
    return p;
  }
  return dev::cuda_malloc(n);
}
void raw_free(Device d, void* p) {
  if (d == Device::CPU) ::free(p);
  else dev::cuda_free(p);
}
}  // namespace

Storage::Storage(size_t n, Device d, bool stream_ordered) : device(d) {
  if (d == Device::CUDA) {
    std::string why;
    if (!dev::cuda_init(&why)) throw Error("cuda is not available: " + why);
  }
  bytes = round_size(n);
  Pool& P = pool(d);
  {
    std::lock_guard<std::mutex> g(P.mu);
    // Reuse a cached block of the same bucket (or at most 2x larger for small ones): the smallest size that
    // has a usable block, the newest of that size.
    const uint64_t done = stream_ordered ? UINT64_MAX : done_ticket(d);
    auto lo = P.free_blocks.lower_bound(bytes), hi = P.free_blocks.upper_bound(bytes * 2);
    while (lo != hi && !ptr) {
      auto end = P.free_blocks.upper_bound(lo->first);
      for (auto it = end; it != lo;) {
        --it;
        if (it->second.ticket <= done) {
          bytes = it->first;
          ptr = it->second.ptr;
          P.free_blocks.erase(it);
          P.stats.cached_bytes -= (int64_t)bytes;
          break;
        }
      }
      lo = end;
    }
  }
  if (!ptr) {
    // A large CPU block the cache cannot serve: first the cached blocks of that class go back to the system,
    // now or once their queued readers ran (release_large_cpu). Without it a chain of growing tensors (the VAE
    // decoder at 1024x1024: 64 MB to 1 GB outputs) kept every size it passed through: SDXL's decode held 6.4 GB
    // cached beside a 4.1 GB live peak.
    if (d == Device::CPU && bytes >= kLargeBlock) release_large_cpu();
    ptr = raw_alloc(d, bytes);
    if (!ptr) {
      empty_cache(d);
      ptr = raw_alloc(d, bytes);
    }
    if (!ptr) {
      std::ostringstream os;
      os << "out of memory on " << device_name(d) << " allocating " << bytes << " bytes ("
         << pool(d).stats.allocated_bytes << " bytes in use)";
      throw Error(os.str());
    }
  }
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.allocated_bytes += (int64_t)bytes;
  P.stats.live_storages += 1;
  if (P.stats.allocated_bytes > P.stats.peak_bytes) P.stats.peak_bytes = P.stats.allocated_bytes;
}

Storage::~Storage() {
  if (!ptr || !owned) return;
  Pool& P = pool(device);
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.allocated_bytes -= (int64_t)bytes;
  P.stats.live_storages -= 1;
  P.stats.cached_bytes += (int64_t)bytes;
  P.free_blocks.emplace(bytes, Block{ptr, device == Device::CPU ? last_use.load(std::memory_order_acquire) : 0});
}

void cpu_tasks_note_completed(uint64_t ticket) {
  // seq_cst store then load, as release_large_cpu stores pending_min then loads the completed ticket: one of
  // the two sides sees the other's store, so no pending block is left behind a completed ticket.
  g_cpu_completed.store(ticket, std::memory_order_seq_cst);
  if (ticket >= pool(Device::CPU).pending_min.load(std::memory_order_seq_cst)) free_pending_cpu(ticket);
}

MemoryStats memory_stats(Device d) {
  Pool& P = pool(d);
  std::lock_guard<std::mutex> g(P.mu);
  return P.stats;
}

void empty_cache(Device d) {
  release_cached(d);
  if (d == Device::CPU) free_pending_cpu(done_ticket(d));
}

namespace {
// Frees the pending large CPU blocks whose last reader has run (ticket <= done).
void free_pending_cpu(uint64_t done) {
  Pool& P = pool(Device::CPU);
  std::vector<void*> blocks;
  {
    std::lock_guard<std::mutex> g(P.mu);
    uint64_t lo = UINT64_MAX;
    for (size_t i = 0; i < P.pending.size();) {
      if (P.pending[i].second.ticket <= done) {
        blocks.push_back(P.pending[i].second.ptr);
        P.stats.cached_bytes -= (int64_t)P.pending[i].first;
        P.pending[i] = P.pending.back();
        P.pending.pop_back();
      } else {
        lo = std::min(lo, P.pending[i].second.ticket);
        ++i;
      }
    }
    P.pending_min.store(lo, std::memory_order_seq_cst);
  }
  for (void* p : blocks) raw_free(Device::CPU, p);
}

// Frees the cached blocks whose last use the stream has completed.
void release_cached(Device d) {
  Pool& P = pool(d);
  std::vector<void*> blocks;
  {
    std::lock_guard<std::mutex> g(P.mu);
    const uint64_t done = done_ticket(d);
    for (auto it = P.free_blocks.begin(); it != P.free_blocks.end();) {
      if (it->second.ticket > done) {
        ++it;  // a queued task may still use it
        continue;
      }
      blocks.push_back(it->second.ptr);
      P.stats.cached_bytes -= (int64_t)it->first;
      it = P.free_blocks.erase(it);
    }
  }
  for (void* p : blocks) raw_free(d, p);
}

// Takes every cached CPU block of kLargeBlock or more out of reuse: those the stream is done with are freed
// now, the others (JS runs ahead of the stream, so a block freed by a dispose is usually still to be read by
// queued tasks) when the stream completes their last task.
void release_large_cpu() {
  Pool& P = pool(Device::CPU);
  std::vector<void*> blocks;
  {
    std::lock_guard<std::mutex> g(P.mu);
    const uint64_t done = done_ticket(Device::CPU);
    uint64_t lo = P.pending_min.load(std::memory_order_relaxed);
    for (auto it = P.free_blocks.lower_bound(kLargeBlock); it != P.free_blocks.end();) {
      if (it->second.ticket <= done) {
        blocks.push_back(it->second.ptr);
        P.stats.cached_bytes -= (int64_t)it->first;
      } else {
        P.pending.emplace_back(it->first, it->second);
        lo = std::min(lo, it->second.ticket);
      }
      it = P.free_blocks.erase(it);
    }
    P.pending_min.store(lo, std::memory_order_seq_cst);
  }
  for (void* p : blocks) raw_free(Device::CPU, p);
  // The stream may have completed the moved blocks' tickets meanwhile (see cpu_tasks_note_completed).
  const uint64_t now = g_cpu_completed.load(std::memory_order_seq_cst);
  if (now >= P.pending_min.load(std::memory_order_seq_cst)) free_pending_cpu(now);
}
}  // namespace

bool cuda_available(std::string* why) { return dev::cuda_init(why); }

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

std::string Tensor::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << "]@" << device_name(device());
  return os.str();
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (int64_t i = (int64_t)shape.size() - 1; i >= 0; --i) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

Tensor empty(const std::vector<int64_t>& shape, DType dtype, Device device, bool stream_ordered) {
  for (auto s : shape)
    if (s < 0) throw Error("negative dimension in shape");
  Tensor t;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dtype;
  t.storage = std::make_shared<Storage>((size_t)t.numel() * dtype_size(dtype), device, stream_ordered);
  return t;
}

Tensor view(const Tensor& t, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t offset) {
  Tensor v = t;
  v.shape = shape;
  if (strides.empty()) {
    if (!t.is_contiguous()) throw Error("view of a non-contiguous tensor " + t.describe() + " needs explicit strides");
    int64_t n = 1;
    for (auto s : shape) n *= s;
    if (n != t.numel()) throw Error("view " + std::to_string(n) + " elements of " + t.describe());
    v.strides = contiguous_strides(shape);
  } else {
    if (strides.size() != shape.size()) throw Error("view: strides and shape differ in rank");
    v.strides = strides;
  }
  if (offset >= 0) v.offset = offset;
  // Bounds: the furthest element must lie inside the storage.
  int64_t hi = v.offset;
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] > 0) hi += (shape[i] - 1) * v.strides[i];
  if (v.numel() > 0 && (size_t)(hi + 1) * dtype_size(v.dtype) > t.storage->bytes)
    throw Error("view of " + t.describe() + " reaches past its storage");
  return v;
}

// IEEE half <-> float, round to nearest even.
float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else {
      int e = -1;
      do { man <<= 1; ++e; } while (!(man & 0x400));
      u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 112) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // overflow to inf (>= 65520)
  if (ax < 0x38800000u) {                                     // subnormal half or zero
    if (ax < 0x33000000u) return (uint16_t)sign;
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // 14..24
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return (uint16_t)(sign | half);
  }
  uint32_t h = ((ax >> 13) - (112u << 10));
  uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return (uint16_t)(sign | h);
}

}  // namespace hsd
