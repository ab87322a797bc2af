// `cpsim validate`: predict scenarios with the analytic engine (and a profile), measure them on the
// GPUs through `cpsim run` or take measured results given with --measured, and report the errors.
#pragma once

#include <string>
#include <vector>

namespace cpsim {

struct ValidateOptions {
  std::vector<std::string> inputs;   // scenario files or folders of them
  std::string profile;               // empty: roofline
  std::vector<std::string> measured; // `cpsim run --json` files; none: run on GPUs
  std::string out_dir;               // validation.csv, validation.json, validation.png (and measured/, logs/)
  std::string plot_script;           // default: scripts/plot_validation.py of the source tree
  bool no_plot = false;              // CSV and JSON only
  int warmup = 3;
  int reps = 10;
};
int cmd_validate(const ValidateOptions& o);

} // namespace cpsim
