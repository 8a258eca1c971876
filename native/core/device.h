// Internal: raw device memory and copies, implemented for CUDA in device_cuda.cpp (stubs without CUDA).
#pragma once
#include <cstddef>
#include <string>

namespace hsd {
namespace dev {
bool cuda_built();
bool cuda_init(std::string* why);       // idempotent; false (with why) when no usable GPU
void* cuda_malloc(size_t bytes);        // nullptr on out-of-memory
void cuda_free(void* p);
void* cuda_stream_create();
void cuda_stream_sync(void* stream);    // throws hsd::Error with the CUDA message
void cuda_memcpy_d2h(void* dst, const void* src, size_t n, void* stream);
void cuda_memcpy_h2d(void* dst, const void* src, size_t n, void* stream);
void cuda_memcpy_d2d(void* dst, const void* src, size_t n, void* stream);
void cuda_check_last(const char* what);  // throws on a pending launch error
}  // namespace dev
}  // namespace hsd
