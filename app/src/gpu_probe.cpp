// GPU probe (see gpu_probe.hpp); the CUDA runtime is there only in builds with the backend.
#include "gpu_probe.hpp"

#include "cpsim/model/errors.hpp"

#if CPSIM_HAVE_BACKEND
#include <cuda_runtime_api.h>
#endif
#if CPSIM_HAVE_KERNELS
#include "cpsim/kernels/attention.hpp"
#endif

namespace cpsim {

GpuProbe probe_gpus() {
  GpuProbe p;
#if CPSIM_HAVE_BACKEND
  p.backend = true;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    p.why = std::string("no usable GPU: cudaGetDeviceCount failed with '") + cudaGetErrorString(e) + "'";
    return p;
  }
  p.devices = n;
  if (n == 0)
    p.why = "no GPU visible (cudaGetDeviceCount found 0 devices)";
#else
  p.why = "this cpsim was built without the GPU backend (configure with CUDA, NCCL and CUPTI present and "
          "-DCPSIM_WITH_CUDA=ON)";
#endif
  return p;
}

calib::KernelBuild kernels_that_run() {
  calib::KernelBuild b = calib::this_build_kernels();
#if CPSIM_HAVE_KERNELS
  try {
    b.implementation = kernels::to_string(kernels::fast_impl());
  } catch (const std::exception&) {
    b.implementation = ""; // no device, or a switch the library refuses: the runs themselves will say why
  }
#endif
  return b;
}

void require_gpus(const std::string& command, const std::string& alternative) {
  GpuProbe p = probe_gpus();
  if (p.devices > 0)
    return;
  throw UserError("'cpsim " + command + "' runs on GPUs, but " + p.why + "; " + alternative);
}

} // namespace cpsim
