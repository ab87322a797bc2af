// Adapter from AttnCall to cpsim_kernels. Until that library is in the build, attention ops stop the
// run with a clear message (comm-only runs and every other path still work).
#include "compute_ops.hpp"

#include "gpu_check.hpp"

namespace cpsim::backend {

bool attention_kernels_available() { return false; }

void attention_forward(const AttnCall&) {
  throw GpuError("this build has no attention kernels (cpsim_kernels): run with --comm-only, or rebuild once kernels/ exists");
}

void attention_backward(const AttnCall&) {
  throw GpuError("this build has no attention kernels (cpsim_kernels): run with --comm-only, or rebuild once kernels/ exists");
}

} // namespace cpsim::backend
