// The subcommands of cpsim, each a function from parsed options to an exit code.
#pragma once

#include <string>

namespace cpsim {

struct PlanOptions {
  std::string input;
  std::string output;
  std::string profile; // recorded in the plan's scenario, so `simulate plan.json` uses it
};
int cmd_plan(const PlanOptions& o);

struct SimulateOptions {
  std::string input;
  std::string engine = "analytic";
  std::string json_out;
  std::string trace_out;
  std::string profile; // calibrated profile; overrides the scenario's "profile" key
  bool allow_oom = false;
  bool quiet = false;
};
int cmd_simulate(const SimulateOptions& o);

int cmd_list_schemes();
int cmd_list_hardware();

} // namespace cpsim
