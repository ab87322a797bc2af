// The subcommands of cpsim, each a function from parsed options to an exit code.
#pragma once

#include <string>

namespace cpsim {

struct PlanOptions {
  std::string input;
  std::string output;
};
int cmd_plan(const PlanOptions& o);

struct SimulateOptions {
  std::string input;
  std::string engine = "analytic";
  std::string json_out;
  std::string trace_out;
  bool allow_oom = false;
  bool quiet = false;
};
int cmd_simulate(const SimulateOptions& o);

int cmd_list_schemes();
int cmd_list_hardware();

} // namespace cpsim
