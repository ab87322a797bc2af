// The loopback transport's fallback signalling where the driver offers no stream memory operations:
// one-thread kernels that write a flag and that spin until a flag reaches a value. They hold an SM slot
// while they spin, and under time-slicing a rank's spin keeps its slice, so they are slower than
// cuStreamWaitValue32; --loopback-sync kernels selects them on purpose.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpsim::backend {

/** After everything before it on `s`: a system-wide fence, then *flag = value. */
void write_flag_kernel(uint32_t* flag, uint32_t value, cudaStream_t s);
/** Holds `s` until (int32_t)(*flag - value) >= 0, the cyclic greater-or-equal of cuStreamWaitValue32. */
void wait_flag_kernel(const uint32_t* flag, uint32_t value, cudaStream_t s);

} // namespace cpsim::backend
