// Reading what the user hands to a subcommand: a scenario file or a plan file (the dry run's
// output), told apart by the plan's "format" key. Both yield a scenario and its one schedule.
#pragma once

#include "cpsim/model/scenario.hpp"
#include "cpsim/model/schedule.hpp"

#include <string>

namespace cpsim {

struct LoadedInput {
  Scenario scenario;
  Schedule schedule;
  double planning_time_s = 0;
  bool from_plan = false;
};

Scenario load_scenario(const std::string& path);
/** Scenario -> generates the schedule; plan -> reads the stored schedule (never re-derived). */
LoadedInput load_input(const std::string& path);
Json plan_to_json(const LoadedInput& in);
std::string git_sha();

} // namespace cpsim
