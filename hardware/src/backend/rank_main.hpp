// One rank's whole run: device, transport (NCCL communicators, or the one-GPU loopback), memory,
// warm-up, timed and profiled repetitions, the report file. Any GPU failure aborts the communicators
// and returns a non-zero code naming the rank.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/backend/run_options.hpp"
#include "cpsim/hardware/backend/wire_plan.hpp"
#include "cpsim/model/scenario.hpp"

namespace cpsim::backend {

int run_rank(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const WirePlan& wire, const RunOptions& o,
             int local_rank);

} // namespace cpsim::backend
