// Entry point from a scenario to the IR: looks up the scheme's generator in one registry table.
// Each generator checks the constraints of its scheme and throws UserError naming the key.
#pragma once

#include "cpsim/model/scenario.hpp"
#include "cpsim/model/schedule.hpp"

#include <string>
#include <vector>

namespace cpsim {

using GeneratorFn = Schedule (*)(const Scenario&, const MaskGeometry&);

struct SchemeInfo {
  std::string name;
  std::string summary;
  GeneratorFn generate;
};

/** Every scheme cpsim can plan, in a stable order. */
const std::vector<SchemeInfo>& scheme_registry();
/** Builds the schedule of `sc.parallel.scheme`; UserError for an unknown scheme or a bad fit. */
Schedule generate_schedule(const Scenario& sc);
Schedule generate_schedule(const Scenario& sc, const MaskGeometry& mask);

// Generators (model/src/schedules/*.cpp)
Schedule generate_ring(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_zigzag(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_ulysses(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_stripe(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_te_p2p(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_te_allgather(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_te_a2a(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_stripe(const Scenario& sc, const MaskGeometry& mask);

/** Rejects any scheme option key not in `allowed` (named in the message). */
void check_scheme_options(const Scenario& sc, const std::vector<std::string>& allowed);
/** UserError unless every sequence length is divisible by `divisor` (reason names the scheme). */
void require_seq_divisible(const Scenario& sc, int64_t divisor, const std::string& why);

} // namespace cpsim
