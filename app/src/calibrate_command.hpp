// `cpsim calibrate`: run the calibration sweeps on the local GPUs through the backend (or read raw
// measurements recorded earlier), fit the profile and write it.
#pragma once

#include <string>
#include <vector>

namespace cpsim {

struct CalibrateOptions {
  std::string out;      // hardware/profiles/<name>.json
  std::string hardware; // built-in description the sweeps are planned for (GPU path)
  std::vector<std::string> from_raw; // fit these raw measurements (joined) instead of running sweeps
  std::vector<std::string> from_run; // run folders: raw.json with kernel and merge samples rebuilt from plans/, measured/
  std::string raw_dir;  // where plans, measured results, logs and raw.json go (GPU path)
  int gpus = 0;         // 0: every visible GPU, up to the hardware's GPUs per node
  bool quick = false;
  std::string sweeps = "kernel,comm,overlap";
  int warmup = 3;
  int reps = 10;
  std::string residuals;    // CSV of the kernel fit's in-sample residuals
  std::string kernel_tiles; // the kernel tiles the fit may choose from ("" = its default candidates)
  std::string kernel_build; // "SHA256,GIT" of the kernels a refitted run measured, when its raw file lacks it
};
int cmd_calibrate(const CalibrateOptions& o);

} // namespace cpsim
