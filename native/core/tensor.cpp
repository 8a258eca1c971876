// Tensors, dtypes and the per-device caching allocator.
// The allocator keeps freed blocks in size buckets (rounded up to 512 B, or to 2 MiB past 1 MiB) for reuse;
// it counts live, cached and peak bytes per device. Storage destructors may run on any thread (a JS
// dispose, or a stream finishing the last task that held it), hence one mutex.
// Each cached CPU block carries a ticket: its storage's last_use, the last CPU task that may still use it (see
// Storage in tensor.h). A stream-ordered allocation takes any block; any other allocation (host writes, scratch
// inside a running task) and empty_cache only blocks whose ticket the stream has completed. Within a size the
// newest block is taken first: it is the one most likely still in cache.
// CPU blocks of 64 MiB or more come from a coalescing heap instead (Pool::segs / free_ranges; large_alloc,
// large_free, growable below): segments mapped from the system, split for a request (best fit) and merged again
// when their pieces are freed, so that a decoder's tensors of changing sizes (64 MB, 128 MB, 256 MB...) reuse
// the same pages run after run. Fresh pages cost the kernel ~1 ms per MB here (a fault and a zeroing per 4 KiB
// page): before, each SD1.5 VAE decode faulted 1 GB in again (270k faults, ~1 s of system time in an 8 s
// decode). A request no free range can serve grows a wholly free segment in place (address space is reserved
// for that) or maps a new one, first releasing wholly free segments (now, or once the stream completed their
// last reader) until the memory held (in use + cached + what the request adds) is within the high-water mark
// of memory in use: RSS follows the live peak when tensors grow from one size to the next (the VAE decoder at
// 1024x1024: 64 MB to 1 GB).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <sys/mman.h>

// AddressSanitizer builds (HYPERSD_SANITIZE=address): a small CPU block is rounded up to its bucket (512 B
// steps), so ASan alone would accept a kernel reading or writing past a tensor's end into the rounding. The
// allocator poisons that tail itself (see Storage::Storage). Large blocks (the mapped heap) are not narrowed.
#if defined(__SANITIZE_ADDRESS__)
#define HSD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HSD_ASAN 1
#endif
#endif
#ifdef HSD_ASAN
#include <sanitizer/asan_interface.h>
#endif

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
  size_t span = 0;  // a pending large segment: the bytes of address space to unmap
};
struct Pool {
  std::mutex mu;
  std::multimap<size_t, Block> free_blocks;  // equal sizes kept in the order freed
  // CPU only: the heap of large blocks. segs: base -> each mapped segment's size (read-write) and address space
  // reserved for it (the rest is PROT_NONE, so the segment can grow in place); free_ranges: address -> free
  // range, merged with its free neighbours within a segment (ticket: the largest of the merged ones).
  struct Seg {
    size_t size, reserved;
  };
  struct Range {
    size_t size;
    uint64_t ticket;
    char* seg;
  };
  std::map<char*, Seg> segs;
  std::map<char*, Range> free_ranges;
  // Wholly free segments taken out of reuse but still read by queued tasks: unmapped once the stream completes
  // their ticket (cpu_tasks_note_completed). Counted in stats.cached_bytes until then.
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
// CPU blocks from this size on come from the large-block heap.
constexpr size_t kLargeBlock = size_t(64) << 20;
void* large_alloc(Pool& P, size_t bytes, uint64_t done);
void large_free(Pool& P, void* ptr, size_t bytes, uint64_t ticket);
char* growable(Pool& P, size_t bytes, uint64_t done, size_t* size);
void take_free_segments(Pool& P, int64_t excess, const char* keep, std::vector<std::pair<size_t, void*>>& unmap);
void unmap_segments(const std::vector<std::pair<size_t, void*>>& unmap);
// Reserves `reserved` bytes of address space and makes the first `bytes` readable and writable; null on failure.
void* map_segment(size_t bytes, size_t reserved) {
  void* m = mmap(nullptr, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  if (mprotect(m, bytes, PROT_READ | PROT_WRITE) != 0) {
    munmap(m, reserved);
    return nullptr;
  }
  return m;
}
void release_cached(Device d);
void release_large_cpu(int64_t excess);
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

namespace {
std::atomic<uint64_t> g_next_storage_id{0};
std::atomic<int64_t> g_failed_count{0};
std::mutex g_failed_mu;
std::unordered_map<uint64_t, std::string>& failed_map() {
  static auto* m = new std::unordered_map<uint64_t, std::string>();  // (never destroyed: storages outlive statics)
  return *m;
}
}  // namespace

void mark_failed(const Storage& s, const std::string& why) {
  std::lock_guard<std::mutex> g(g_failed_mu);
  if (failed_map().emplace(s.id, why).second) g_failed_count.fetch_add(1, std::memory_order_relaxed);
}

int64_t failed_mark_count() { return g_failed_count.load(std::memory_order_relaxed); }

bool failed_why(const Storage& s, std::string* why) {
  if (g_failed_count.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard<std::mutex> g(g_failed_mu);
  auto it = failed_map().find(s.id);
  if (it == failed_map().end()) return false;
  if (why) *why = it->second;
  return true;
}

Storage::Storage(size_t n, Device d, bool stream_ordered) : device(d) {
  id = g_next_storage_id.fetch_add(1, std::memory_order_relaxed) + 1;
  // (made first, so that its allocation failing cannot leak the block; ptr and bytes are set at the end)
  if (d == Device::CPU) alias_ = std::make_shared<Storage>(Borrow{}, *this);
  if (d == Device::CUDA) {
    std::string why;
    if (!dev::cuda_init(&why)) throw Error("cuda is not available: " + why);
  }
  if (d == Device::CPU && n > (size_t(1) << 30)) {
    // Large blocks are mapped with MAP_NORESERVE, which skips the kernel's overcommit check: a tensor larger
    // than the machine would be "allocated" and the process killed when it is written.
    static const double limit = memory_limit_bytes();
    if (limit > 0 && (double)n > limit) {
      std::ostringstream os;
      os << "out of memory on cpu: a tensor of " << n << " bytes is more than the " << (uint64_t)limit
         << " bytes this process may use (RAM + swap, or its cgroup's memory limit)";
      throw Error(os.str());
    }
  }
  bytes = round_size(n);
  const size_t requested = n;
  uint64_t reused_ticket = 0;  // the ticket of a cached block taken for this storage (0: a fresh block)
  Pool& P = pool(d);
  const uint64_t done = stream_ordered ? UINT64_MAX : done_ticket(d);
  const bool large = d == Device::CPU && bytes >= kLargeBlock;  // from the large-block heap
  if (large) {
    std::vector<std::pair<size_t, void*>> unmap;  // (address space, base) of released segments
    {
      std::lock_guard<std::mutex> g(P.mu);
      ptr = large_alloc(P, bytes, done);
      if (!ptr) {
        // Grow a wholly free segment in place, else map a new one; either way, first wholly free segments go
        // back until in use + cached + what this adds fits in the peak of memory in use.
        size_t grow_from = 0;
        char* grow = growable(P, bytes, done, &grow_from);
        int64_t pending = 0;
        for (const auto& pb : P.pending) pending += (int64_t)pb.first;
        const int64_t in_use = P.stats.allocated_bytes + (int64_t)bytes;
        const int64_t excess = in_use + P.stats.cached_bytes - pending - (int64_t)grow_from - std::max(P.stats.peak_bytes, in_use);
        if (excess > 0) take_free_segments(P, excess, grow, unmap);
        if (grow && mprotect(grow + grow_from, bytes - grow_from, PROT_READ | PROT_WRITE) == 0) {
          P.free_ranges.erase(grow);
          P.segs[grow].size = bytes;
          P.stats.cached_bytes -= (int64_t)grow_from;
          ptr = grow;
        }
      }
    }
    unmap_segments(unmap);
    if (!ptr) {
      // A new segment, with address space reserved to grow in place to 4x.
      // Without the reserve (an address-space limit, ulimit -v, can refuse it) the segment cannot grow.
      size_t span = 4 * bytes;
      void* m = map_segment(bytes, span);
      if (!m) m = map_segment(bytes, span = bytes);
      if (!m) {
        empty_cache(d);
        m = map_segment(bytes, span = bytes);
      }
      if (m) {
        ptr = m;
        std::lock_guard<std::mutex> g(P.mu);
        P.segs.emplace((char*)m, Pool::Seg{bytes, span});
      }
    }
  } else {
    std::lock_guard<std::mutex> g(P.mu);
    // Reuse a cached block of the same bucket (or at most 2x larger for small ones): the smallest size that
    // has a usable block, the newest of that size.
    auto lo = P.free_blocks.lower_bound(bytes), hi = P.free_blocks.upper_bound(bytes * 2);
    while (lo != hi && !ptr) {
      auto end = P.free_blocks.upper_bound(lo->first);
      for (auto it = end; it != lo;) {
        --it;
        if (it->second.ticket <= done) {
          bytes = it->first;
          ptr = it->second.ptr;
          reused_ticket = it->second.ticket;
          P.free_blocks.erase(it);
          P.stats.cached_bytes -= (int64_t)bytes;
          break;
        }
      }
      lo = end;
    }
  }
  if (!ptr && !large) {
    ptr = raw_alloc(d, bytes);
    if (!ptr) {
      empty_cache(d);
      ptr = raw_alloc(d, bytes);
    }
  }
  if (!ptr) {
    std::ostringstream os;
    os << "out of memory on " << device_name(d) << " allocating " << bytes << " bytes ("
       << pool(d).stats.allocated_bytes << " bytes in use)";
    throw Error(os.str());
  }
#ifdef HSD_ASAN
  // Poison the bucket's tail past the requested size. Only when no queued task of the block's previous owner
  // can still run (a stream-ordered allocation may take a block whose last reader is queued: that reader may
  // touch its own, longer extent); otherwise leave the whole block addressable.
  if (d == Device::CPU && !large) {
    ASAN_UNPOISON_MEMORY_REGION(ptr, bytes);
    if (reused_ticket <= done_ticket(d) && requested < bytes)
      ASAN_POISON_MEMORY_REGION((char*)ptr + requested, bytes - requested);
  }
#else
  (void)requested;
  (void)reused_ticket;
#endif
  if (alias_) {
    alias_->ptr = ptr;
    alias_->bytes = bytes;
  }
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.allocated_bytes += (int64_t)bytes;
  P.stats.live_storages += 1;
  if (P.stats.allocated_bytes > P.stats.peak_bytes) P.stats.peak_bytes = P.stats.allocated_bytes;
}

Storage::~Storage() {
  // The mark goes with the last holder: the alias (the owner's alias_ dies after this body, or later with the
  // last task holding it), or the owner itself when it has none (CUDA).
  if (g_failed_count.load(std::memory_order_relaxed) > 0 && !alias_) {
    std::lock_guard<std::mutex> g(g_failed_mu);
    if (failed_map().erase(id)) g_failed_count.fetch_sub(1, std::memory_order_relaxed);
  }
  if (!ptr || !owned) return;
  Pool& P = pool(device);
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.allocated_bytes -= (int64_t)bytes;
  P.stats.live_storages -= 1;
  P.stats.cached_bytes += (int64_t)bytes;
  const uint64_t ticket = device == Device::CPU ? last_use.load(std::memory_order_acquire) : 0;
  if (device == Device::CPU && bytes >= kLargeBlock) large_free(P, ptr, bytes, ticket);
  else P.free_blocks.emplace(bytes, Block{ptr, ticket});
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

void reset_peak(Device d) {
  Pool& P = pool(d);
  std::lock_guard<std::mutex> g(P.mu);
  P.stats.peak_bytes = P.stats.allocated_bytes;
}

void empty_cache(Device d) {
  release_cached(d);
  if (d == Device::CPU) free_pending_cpu(done_ticket(d));
}

namespace {
// Unmaps the pending large CPU segments whose last reader has run (ticket <= done).
void free_pending_cpu(uint64_t done) {
  Pool& P = pool(Device::CPU);
  std::vector<std::pair<size_t, Block>> blocks;
  {
    std::lock_guard<std::mutex> g(P.mu);
    uint64_t lo = UINT64_MAX;
    for (size_t i = 0; i < P.pending.size();) {
      if (P.pending[i].second.ticket <= done) {
        blocks.push_back(P.pending[i]);
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
  for (auto& b : blocks) munmap(b.second.ptr, b.second.span);
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
  if (d == Device::CPU) release_large_cpu(INT64_MAX);
}

// Best fit among the free ranges of at least `bytes` whose ticket is <= done (the smallest; the newest ticket
// among equals); the rest of the range stays free. Returns null when none fits. Called with P.mu held.
void* large_alloc(Pool& P, size_t bytes, uint64_t done) {
  auto best = P.free_ranges.end();
  for (auto it = P.free_ranges.begin(); it != P.free_ranges.end(); ++it) {
    const Pool::Range& r = it->second;
    if (r.size < bytes || r.ticket > done) continue;
    if (best == P.free_ranges.end() || r.size < best->second.size ||
        (r.size == best->second.size && r.ticket > best->second.ticket))
      best = it;
  }
  if (best == P.free_ranges.end()) return nullptr;
  char* p = best->first;
  const Pool::Range r = best->second;
  P.free_ranges.erase(best);
  if (r.size > bytes) P.free_ranges.emplace(p + bytes, Pool::Range{r.size - bytes, r.ticket, r.seg});
  P.stats.cached_bytes -= (int64_t)bytes;
  return p;
}

// The largest wholly free segment smaller than `bytes` (ticket <= done) whose reserved address space lets it
// grow in place to `bytes` (the pages it had stay faulted in, only the difference is new), its size in *size;
// null when there is none. Its addresses do not change, so a stream-ordered allocation may take one whose
// readers are still queued, as with any cached block. P.mu held.
char* growable(Pool& P, size_t bytes, uint64_t done, size_t* size) {
  char* base = nullptr;
  for (const auto& [b, sg] : P.segs) {
    if (sg.size >= bytes || sg.reserved < bytes || sg.size <= *size) continue;
    auto f = P.free_ranges.find(b);
    if (f != P.free_ranges.end() && f->second.size == sg.size && f->second.ticket <= done) {
      base = b;
      *size = sg.size;
    }
  }
  return base;
}

// Returns [ptr, ptr + bytes) to the heap, merged with free neighbours of the same segment. P.mu held.
void large_free(Pool& P, void* ptr, size_t bytes, uint64_t ticket) {
  char* p = (char*)ptr;
  auto seg = P.segs.upper_bound(p);
  --seg;  // the segment holding p (p is inside one: it came from large_alloc or a new segment)
  Pool::Range r{bytes, ticket, seg->first};
  auto next = P.free_ranges.lower_bound(p);
  if (next != P.free_ranges.end() && next->first == p + bytes && next->second.seg == r.seg) {
    r.size += next->second.size;
    r.ticket = std::max(r.ticket, next->second.ticket);
    next = P.free_ranges.erase(next);
  }
  if (next != P.free_ranges.begin()) {
    auto prev = std::prev(next);
    if (prev->second.seg == r.seg && prev->first + prev->second.size == p) {
      prev->second.size += r.size;
      prev->second.ticket = std::max(prev->second.ticket, r.ticket);
      return;
    }
  }
  P.free_ranges.emplace(p, r);
}

// Takes wholly free segments other than `keep` out of the large heap, largest first, until `excess` bytes are
// gone: those the stream is done with into `unmap` (to be unmapped once P.mu is released), the others (JS runs
// ahead of the stream, so a block freed by a dispose is usually still to be read by queued tasks) into
// P.pending, unmapped when the stream completes their last reader. P.mu held.
void take_free_segments(Pool& P, int64_t excess, const char* keep, std::vector<std::pair<size_t, void*>>& unmap) {
  const uint64_t done = done_ticket(Device::CPU);
  uint64_t lo = P.pending_min.load(std::memory_order_relaxed);
  std::vector<std::pair<Pool::Seg, char*>> whole;
  for (const auto& [base, sg] : P.segs) {
    auto f = P.free_ranges.find(base);
    if (base != keep && f != P.free_ranges.end() && f->second.size == sg.size) whole.emplace_back(sg, base);
  }
  std::sort(whole.begin(), whole.end(), [](const auto& a, const auto& b) { return a.first.size > b.first.size; });
  for (const auto& [sg, base] : whole) {
    if (excess <= 0) break;
    excess -= (int64_t)sg.size;
    auto f = P.free_ranges.find(base);
    const uint64_t ticket = f->second.ticket;
    P.free_ranges.erase(f);
    P.segs.erase(base);
    if (ticket <= done) {
      unmap.emplace_back(sg.reserved, base);
      P.stats.cached_bytes -= (int64_t)sg.size;
    } else {
      P.pending.emplace_back(sg.size, Block{base, ticket, sg.reserved});
      lo = std::min(lo, ticket);
    }
  }
  P.pending_min.store(lo, std::memory_order_seq_cst);
}

void unmap_segments(const std::vector<std::pair<size_t, void*>>& unmap) {
  for (const auto& [span, base] : unmap) munmap(base, span);
  // The stream may have completed the tickets of segments moved to pending meanwhile (see
  // cpu_tasks_note_completed).
  Pool& P = pool(Device::CPU);
  const uint64_t now = g_cpu_completed.load(std::memory_order_seq_cst);
  if (now >= P.pending_min.load(std::memory_order_seq_cst)) free_pending_cpu(now);
}

void release_large_cpu(int64_t excess) {
  std::vector<std::pair<size_t, void*>> unmap;
  {
    Pool& P = pool(Device::CPU);
    std::lock_guard<std::mutex> g(P.mu);
    take_free_segments(P, excess, nullptr, unmap);
  }
  unmap_segments(unmap);
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

void Tensor::bad_data_type(const char* want) const {
  throw Error("the kernel reads " + describe() + " as " + want + ": this op does not take " + dtype_name(dtype) + " there");
}

std::string Tensor::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << "]@" << device_name(device());
  return os.str();
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) { return contiguous_strides(Dims(shape)); }
Dims contiguous_strides(const Dims& shape) {
  Dims st(shape.size(), 0);
  int64_t s = 1;
  for (int64_t i = (int64_t)shape.size() - 1; i >= 0; --i) {
    st[(size_t)i] = s;
    s *= shape[(size_t)i];
  }
  return st;
}

Tensor empty(const std::vector<int64_t>& shape, DType dtype, Device device, bool stream_ordered) {
  // The element count, the strides and the byte count must not overflow (a wrapped count had allocated a few
  // bytes behind a shape of 2^62 elements): the product of the extents (zeros counted as 1, for the strides)
  // times the element size stays below 2^62 bytes.
  int64_t span = (int64_t)dtype_size(dtype);
  for (auto s : shape) {
    if (s < 0) throw Error("negative dimension in shape");
    if (s > 1 && __builtin_mul_overflow(span, s, &span)) span = INT64_MAX;
  }
  if (span > (int64_t(1) << 62)) {
    std::string d;
    for (size_t i = 0; i < shape.size(); ++i) d += (i ? "," : "") + std::to_string(shape[i]);
    throw Error("shape [" + d + "] of " + dtype_name(dtype) + " is too large (2^62 bytes at most)");
  }
  Tensor t;
  t.shape = shape;
  t.strides = contiguous_strides(t.shape);
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
    v.strides = contiguous_strides(v.shape);
  } else {
    if (strides.size() != shape.size()) throw Error("view: strides and shape differ in rank");
    v.strides = strides;
  }
  if (offset >= 0) v.offset = offset;
  // Bounds: the furthest element must lie inside the storage.
  // (in overflow-checked arithmetic: a wrapped sum had let a view of 2^63 elements pass)
  int64_t hi = v.offset, n = 1;
  bool over = v.offset < 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t step = 0;
    if (shape[i] < 0) over = true;
    if (shape[i] > 0) over = over || __builtin_mul_overflow(shape[i] - 1, v.strides[i], &step) || __builtin_add_overflow(hi, step, &hi);
    over = over || __builtin_mul_overflow(n, shape[i], &n);
  }
  if (over || (n > 0 && ((uint64_t)hi + 1) > t.storage->bytes / dtype_size(v.dtype)))
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
