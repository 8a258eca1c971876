// CUDA runtime calls used by the core (allocation, streams, copies). Built with HSD_WITH_CUDA when nvcc is
// found; otherwise every entry point reports that this build has no CUDA. A machine without a GPU makes
// cudaGetDeviceCount fail: that becomes the reason string, never a crash.
#include <mutex>
#include <string>

#include "device.h"
#include "hypersd/ops.h"

#ifdef HSD_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hsd {
namespace dev {

#ifdef HSD_WITH_CUDA
namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
}  // namespace

bool cuda_built() { return true; }

bool cuda_init(std::string* why) {
  static std::once_flag once;
  static bool ok = false;
  static std::string reason;
  std::call_once(once, [] {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      reason = std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(e) + ")";
      cudaGetLastError();
      return;
    }
    if (n == 0) {
      reason = "no CUDA device found";
      return;
    }
    e = cudaSetDevice(0);
    if (e != cudaSuccess) {
      reason = std::string("cudaSetDevice(0): ") + cudaGetErrorString(e);
      return;
    }
    ok = true;
  });
  if (!ok && why) *why = reason;
  return ok;
}

void* cuda_malloc(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the OOM so later calls are not poisoned
    return nullptr;
  }
  return p;
}
void cuda_free(void* p) { cudaFree(p); }
void* cuda_stream_create() {
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return (void*)s;
}
void cuda_stream_sync(void* s) { check(cudaStreamSynchronize((cudaStream_t)s), "cudaStreamSynchronize"); }
void cuda_memcpy_d2h(void* d, const void* s, size_t n, void* st) {
  check(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToHost, (cudaStream_t)st), "cudaMemcpy device->host");
}
void cuda_memcpy_h2d(void* d, const void* s, size_t n, void* st) {
  check(cudaMemcpyAsync(d, s, n, cudaMemcpyHostToDevice, (cudaStream_t)st), "cudaMemcpy host->device");
}
void cuda_memcpy_d2d(void* d, const void* s, size_t n, void* st) {
  check(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, (cudaStream_t)st), "cudaMemcpy device->device");
}
void cuda_check_last(const char* what) { check(cudaGetLastError(), what); }

#else
namespace {
[[noreturn]] void nocuda() { throw Error("this build of hypersd has no CUDA support (rebuild with nvcc, HYPERSD_CUDA=1)"); }
}  // namespace
bool cuda_built() { return false; }
bool cuda_init(std::string* why) {
  if (why) *why = "this build of hypersd has no CUDA support (rebuild with nvcc available, or HYPERSD_CUDA=1)";
  return false;
}
void* cuda_malloc(size_t) { return nullptr; }
void cuda_free(void*) {}
void* cuda_stream_create() { nocuda(); }
void cuda_stream_sync(void*) { nocuda(); }
void cuda_memcpy_d2h(void*, const void*, size_t, void*) { nocuda(); }
void cuda_memcpy_h2d(void*, const void*, size_t, void*) { nocuda(); }
void cuda_memcpy_d2d(void*, const void*, size_t, void*) { nocuda(); }
void cuda_check_last(const char*) {}

#endif

}  // namespace dev

// Without CUDA kernels in the build (no nvcc, or no native/cuda/register.cu), the CUDA op table is empty.
#ifndef HSD_CUDA_KERNELS
void register_cuda_kernels(OpRegistry&) {}
#endif

}  // namespace hsd
