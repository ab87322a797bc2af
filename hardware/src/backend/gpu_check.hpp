// Error checks of the GPU half. A failed CUDA, NCCL or CUPTI call throws GpuError with the call,
// file and line; the rank's main loop catches it, aborts its communicators (so peers are not left
// waiting on it) and exits non-zero with the rank named.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <stdexcept>
#include <string>

namespace cpsim::backend {

class GpuError : public std::runtime_error {
public:
  explicit GpuError(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] inline void gpu_fail(const char* api, const char* call, const char* msg, const char* file, int line) {
  throw GpuError(std::string(api) + " error '" + msg + "' in " + call + " at " + file + ":" + std::to_string(line));
}

} // namespace cpsim::backend

#define BK_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                       \
    cudaError_t bk_e_ = (call);                                                                              \
    if (bk_e_ != cudaSuccess)                                                                                \
      ::cpsim::backend::gpu_fail("CUDA", #call, cudaGetErrorString(bk_e_), __FILE__, __LINE__);              \
  } while (0)

// ncclInProgress is not an error for non-blocking communicators: completion is polled separately.
#define BK_NCCL_CHECK(call)                                                                                  \
  do {                                                                                                       \
    ncclResult_t bk_r_ = (call);                                                                             \
    if (bk_r_ != ncclSuccess && bk_r_ != ncclInProgress)                                                     \
      ::cpsim::backend::gpu_fail("NCCL", #call, ncclGetErrorString(bk_r_), __FILE__, __LINE__);              \
  } while (0)
