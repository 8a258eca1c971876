// Host helpers shared by the CUDA kernel families (see common.cuh).
#include <map>
#include <mutex>
#include <tuple>

#include "common.cuh"

namespace hsd {
namespace cu {

void allow_smem(const void* kernel, int bytes) {
  static std::mutex mu;
  static std::map<const void*, int> raised;
  std::lock_guard<std::mutex> g(mu);
  int& have = raised[kernel];
  if (have >= bytes) return;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("cannot give a kernel " + std::to_string(bytes) + " bytes of shared memory: " + cudaGetErrorString(e));
  }
  have = bytes;
}

int sm_count() {
  static std::mutex mu;
  static std::map<int, int> sms;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  std::lock_guard<std::mutex> g(mu);
  auto it = sms.find(dev);
  if (it == sms.end()) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n < 1) {
      cudaGetLastError();
      n = 1;
    }
    it = sms.emplace(dev, n).first;
  }
  return it->second;
}

int blocks_per_sm(const void* kernel, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, size_t>, int> occ;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  std::lock_guard<std::mutex> g(mu);
  const auto key = std::make_tuple(dev, kernel, threads, smem);
  auto it = occ.find(key);
  if (it == occ.end()) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess || n < 1) {
      cudaGetLastError();
      n = 1;
    }
    it = occ.emplace(key, n).first;
  }
  return it->second;
}

unsigned* reduction_counters(cudaStream_t s) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, unsigned*> bufs;  // never freed: they live as long as the context
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    throw Error("cudaGetDevice failed");
  }
  std::lock_guard<std::mutex> g(mu);
  auto it = bufs.find({dev, s});
  if (it != bufs.end()) return it->second;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, kMaxCounters * sizeof(unsigned));
  if (e == cudaSuccess) e = cudaMemsetAsync(p, 0, kMaxCounters * sizeof(unsigned), s);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (p) cudaFree(p);
    throw Error(std::string("allocating the reduction counters: ") + cudaGetErrorString(e));
  }
  bufs.emplace(std::make_pair(dev, s), (unsigned*)p);
  return (unsigned*)p;
}

namespace {
void check_cuda(const char* op, cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(op) + ": " + what + ": " + cudaGetErrorString(e));
}
}  // namespace

Tensor bad_index_word(const char* op, cudaStream_t s) {
  Tensor w = empty({1}, DType::I64, Device::CUDA);
  check_cuda(op, cudaMemsetAsync(w.raw(), 0xff, 8, s), "cudaMemsetAsync");
  return w;
}

int64_t first_bad_index(const char* op, const Tensor& word, cudaStream_t s) {
  check_cuda(op, cudaGetLastError(), "launch");
  unsigned long long v = 0;
  check_cuda(op, cudaMemcpyAsync(&v, word.raw(), 8, cudaMemcpyDeviceToHost, s), "reading the index check");
  check_cuda(op, cudaStreamSynchronize(s), "reading the index check");
  return v == ~0ull ? -1 : (int64_t)v;
}

int64_t read_index(const char* op, const Tensor& ids, int64_t pos, cudaStream_t s) {
  int64_t v = 0;
  const size_t es = dtype_size(ids.dtype);
  check_cuda(op, cudaMemcpyAsync(&v, (const char*)ids.raw() + pos * (int64_t)es, es, cudaMemcpyDeviceToHost, s), "reading an index");
  check_cuda(op, cudaStreamSynchronize(s), "reading an index");
  return es == 4 ? (int64_t)(int32_t)(uint32_t)(uint64_t)v : v;
}

}  // namespace cu
}  // namespace hsd
