// Entry point from a scenario to the IR: looks up the scheme's generator in one registry table.
// Each generator checks the constraints of its scheme and throws UserError naming the key.
#pragma once

#include "cpsim/model/scenario.hpp"
#include "cpsim/model/schedule.hpp"

#include <string>
#include <vector>

namespace cpsim {

using GeneratorFn = Schedule (*)(const Scenario&, const MaskGeometry&);

/** The `parallel` option sets worth trying for a scenario (degrees of a hybrid), for `cpsim compare`. */
using VariantsFn = std::vector<Json> (*)(const Scenario&);

struct SchemeInfo {
  std::string name;
  std::string summary;
  GeneratorFn generate;
  // nullptr: the scheme is tried once with no options. A hook may list option sets that turn out
  // invalid for the scenario; compare reports those with the generator's reason.
  VariantsFn variants = nullptr;
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
Schedule generate_usp(const Scenario& sc, const MaskGeometry& mask);
std::vector<Json> usp_variants(const Scenario& sc); // every (u, r) and ring variant
Schedule generate_loongtrain(const Scenario& sc, const MaskGeometry& mask);
std::vector<Json> loongtrain_variants(const Scenario& sc); // every (d_hp, d_cp, w)
Schedule generate_cqs(const Scenario& sc, const MaskGeometry& mask);
Schedule generate_dcp(const Scenario& sc, const MaskGeometry& mask);
std::vector<Json> dcp_variants(const Scenario& sc); // DCP's heuristic block and its grid {1024, 2048, 4096}
Schedule generate_pit(const Scenario& sc, const MaskGeometry& mask);
std::vector<Json> pit_variants(const Scenario& sc); // granularities 16, 64, 128
Schedule generate_dsv(const Scenario& sc, const MaskGeometry& mask);
std::vector<Json> dsv_variants(const Scenario& sc); // every (hcp, scp), naive and sparsity-aware

/** Rejects any scheme option key not in `allowed` (named in the message). */
void check_scheme_options(const Scenario& sc, const std::vector<std::string>& allowed);
/** UserError unless every sequence length is divisible by `divisor` (reason names the scheme). */
void require_seq_divisible(const Scenario& sc, int64_t divisor, const std::string& why);

} // namespace cpsim
