// Whether this cpsim can run anything on GPUs: built with the backend, and a device visible. The
// commands that need GPUs (calibrate, validate without --measured) ask first and refuse with the
// cause (exit 2) instead of failing somewhere inside a child process.
#pragma once

#include <string>

namespace cpsim {

struct GpuProbe {
  bool backend = false; // built with the CUDA/NCCL backend
  int devices = 0;
  std::string why; // empty when devices > 0
};

GpuProbe probe_gpus();
/** UserError naming the command and the cause unless a GPU can be used. */
void require_gpus(const std::string& command, const std::string& alternative);

} // namespace cpsim
