// Whether this cpsim can run anything on GPUs: built with the backend, and a device visible. The
// commands that need GPUs (calibrate, validate without --measured) ask first and refuse with the
// cause (exit 2) instead of failing somewhere inside a child process.
#pragma once

#include "cpsim/calibrate/profile.hpp"

#include <string>

namespace cpsim {

struct GpuProbe {
  bool backend = false; // built with the CUDA/NCCL backend
  int devices = 0;
  std::string why; // empty when devices > 0
};

GpuProbe probe_gpus();
/**
 * The attention kernels this binary runs on this machine: the source identity compiled in, and the implementation
 * the kernel library's fast path resolves to here (it depends on the device and the library's own switches), asked
 * of the library; unknown ("") in a build without the kernels or where the library cannot say.
 */
calib::KernelBuild kernels_that_run();
/** UserError naming the command and the cause unless a GPU can be used. */
void require_gpus(const std::string& command, const std::string& alternative);

} // namespace cpsim
