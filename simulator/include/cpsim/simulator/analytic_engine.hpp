// The analytic engine: executes the IR in max-plus time with no contention. Every op starts when
// its stream and dependencies allow; a transfer starts when both ends are ready and a collective
// when all members are. Exact for contention-free schedules, and fast enough for large W.
#pragma once

#include "cpsim/model/cluster.hpp"
#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/timeline.hpp"

namespace cpsim {

/** Runs the schedule; UserError if the plan deadlocks (an op whose partner can never be ready). */
SimResult run_analytic(const Schedule& s, const Workload& w, const ClusterSpec& c, const KernelCostModel& kernels);
/** Same, with a communication model other than the cluster's roofline (a calibrated profile). */
SimResult run_analytic(const Schedule& s, const Workload& w, const KernelCostModel& kernels, const CommTimeModel& comm);

} // namespace cpsim
