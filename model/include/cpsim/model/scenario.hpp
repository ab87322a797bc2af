// A scenario: hardware + workload + parallel scheme + pass, the input of `cpsim plan/simulate`.
// Named hardware is resolved through a callback so that model/ does not depend on hardware/.
#pragma once

#include "cpsim/model/cluster.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <functional>
#include <string>

namespace cpsim {

struct ParallelSpec {
  std::string scheme;
  int cp = 1;
  int dp = 1; // independent CP groups side by side (replicas of the schedule) sharing the network
  Json options = Json::object(); // scheme-specific keys, validated by the scheme's generator
};

struct Scenario {
  std::string name;
  ClusterSpec cluster;
  Workload workload;
  ParallelSpec parallel;
  PassKind pass = PassKind::FWD;
  int64_t tile_m = 128;
  int64_t tile_n = 128;
  // Calibrated cost-model profile (calibrate/); empty: the hardware's roofline defaults. A relative
  // path in the file is resolved against the scenario's folder, so this holds a usable path.
  std::string profile;
  Json source; // the scenario as the user gave it, kept verbatim in plans and results
};

/** Returns the JSON description of a built-in hardware name, or throws UserError listing the names. */
using HardwareResolver = std::function<Json(const std::string& name)>;

/** Parses and validates a scenario object; `base_dir` resolves relative file paths inside it. */
Scenario scenario_from_json(const Json& j, const HardwareResolver& resolve, const std::string& base_dir);
/** The resolved scenario (hardware expanded) as JSON; parses back to an equal scenario. */
Json scenario_to_json(const Scenario& s);

} // namespace cpsim
