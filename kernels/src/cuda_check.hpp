// CUDA error checks of the kernel library: a failed call throws KernelError naming the call, the
// file and the line (the backend catches it like its own GPU errors).
#pragma once

#include "cpsim/kernels/attention.hpp"

#include <cuda_runtime.h>

#include <string>

#define KN_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                       \
    cudaError_t kn_e_ = (call);                                                                              \
    if (kn_e_ != cudaSuccess)                                                                                \
      throw ::cpsim::kernels::KernelError(std::string("CUDA error '") + cudaGetErrorString(kn_e_) + "' in " + \
                                          #call + " at " + __FILE__ + ":" + std::to_string(__LINE__));       \
  } while (0)

// A launch error shows up at the next call; check right after each launch so it names the kernel.
#define KN_LAUNCH_CHECK(name)                                                                                \
  do {                                                                                                       \
    cudaError_t kn_e_ = cudaGetLastError();                                                                  \
    if (kn_e_ != cudaSuccess)                                                                                \
      throw ::cpsim::kernels::KernelError(std::string("CUDA error '") + cudaGetErrorString(kn_e_) +           \
                                          "' launching " #name " at " + __FILE__ + ":" + std::to_string(__LINE__)); \
  } while (0)
