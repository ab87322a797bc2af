// The discrete-event engine: executes the schedule IR on SimGrid (flow-level network, max-min
// bandwidth sharing) over the fat tree of fabric.hpp, so that flows fighting for a link slow each
// other down, which the analytic engine cannot see. Same inputs and result structure as the
// analytic engine; SimGrid never appears in this header (it is private to cpsim_simulator).
#pragma once

#include "cpsim/model/cluster.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/timeline.hpp"

#include <cstdint>

namespace cpsim {

/** What the engine simulated, for logs and benchmarks. */
struct DesStats {
  int replicas = 1;           // data-parallel replicas of the schedule
  int simulated_replicas = 1; // how many were simulated after collapsing identical components
  int components = 1;         // sets of replicas whose flows share links
  int classes = 1;            // distinct components
  int reported_replica = 0;   // the replica whose records the result holds (the slowest simulated)
  int64_t hosts = 0, links = 0, flows = 0, execs = 0;
  double setup_wall_s = 0; // execution graph, collapse and platform construction (wall clock)
  double run_wall_s = 0;   // SimGrid's event loop (wall clock)
};

/**
 * Runs the schedule on a SimGrid platform built from `c`. Records are those of the slowest
 * simulated replica. UserError for a topology the fabric cannot build or a plan that deadlocks.
 * SimGrid keeps global state: run this at most once per process that also checks simulated times
 * against the analytic engine (the result's times are relative to the engine's start anyway).
 */
SimResult run_des(const Schedule &s, const Workload &w, const ClusterSpec &c, const KernelCostModel &kernels,
                  DesStats *stats = nullptr);

} // namespace cpsim
