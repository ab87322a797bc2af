// `cpsim compare`: the scheme search. Every scheme of the registry, with every option set its
// variants hook proposes for the scenario, is planned and simulated with the analytic engine;
// the results are ranked by step time, and the ones that do not apply are listed with the reason.
#pragma once

#include "cpsim/model/scenario.hpp"

#include <string>
#include <vector>

namespace cpsim {

struct CompareOptions {
  std::string input;
  std::string json_out;
  std::string profile; // calibrated profile; overrides the scenario's "profile" key
};
int cmd_compare(const CompareOptions& o);

struct CompareEntry {
  std::string scheme;
  Json options = Json::object();
  // filled when the scheme applies
  double step_time_s = 0, compute_s = 0, exposed_comm_s = 0, idle_s = 0; // breakdown: mean over ranks
  int64_t peak_memory_bytes = 0;                                        // worst rank
  bool fits_memory = true;
  double flops = 0;
  int64_t bytes_sent = 0;
  double planning_time_s = 0;
  std::vector<std::string> notes; // where a calibrated prediction left the profile's ranges
  // filled when it does not
  std::string reason;
};

struct Comparison {
  std::vector<CompareEntry> ranked;       // fastest first
  std::vector<CompareEntry> not_applicable;
};

/** Runs the search; the scenario's own scheme and options only add one more variant to try. */
Comparison compare_schemes(const Scenario& sc);
Json comparison_to_json(const Comparison& c, const Scenario& sc);
std::string comparison_table(const Comparison& c, const Scenario& sc);

} // namespace cpsim
