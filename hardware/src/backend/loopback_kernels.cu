// Spin-kernel signalling of the loopback transport (see the header).
#include "loopback_kernels.hpp"

namespace cpsim::backend {

namespace {
__global__ void k_write_flag(volatile uint32_t* flag, uint32_t value) {
  __threadfence_system(); // the copies before this kernel are visible to whoever sees the flag
  *flag = value;
}

__global__ void k_wait_flag(const volatile uint32_t* flag, uint32_t value) {
  while (int32_t(*flag - value) < 0)
    __nanosleep(500);
  __threadfence_system();
}
} // namespace

void write_flag_kernel(uint32_t* flag, uint32_t value, cudaStream_t s) { k_write_flag<<<1, 1, 0, s>>>(flag, value); }

void wait_flag_kernel(const uint32_t* flag, uint32_t value, cudaStream_t s) { k_wait_flag<<<1, 1, 0, s>>>(flag, value); }

} // namespace cpsim::backend
