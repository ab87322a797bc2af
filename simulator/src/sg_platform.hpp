// Private to cpsim_simulator: the SimGrid platform of one discrete-event run, built from the
// fabric for the simulated replicas only. One Full zone holding just those GPUs, with a route
// only for the (src, dst) pairs the schedule sends between, and a SimGrid link only for the
// fabric links those routes cross (name lookups and all-pairs tables never scale: simgrid.md).
#pragma once

#include "cpsim/model/schedule.hpp"
#include "cpsim/simulator/fabric.hpp"

#include <simgrid/s4u.hpp>

#include <vector>

namespace cpsim {

struct SgPlatform {
  std::vector<simgrid::s4u::Host *> hosts; // [simulated replica index * world + rank]
  int64_t links = 0;
};

/** Builds and seals the platform; hosts run `host_flops` per core, with one core per op the
 *  schedule can run at once on a rank, so concurrent compute ops never share a core. */
SgPlatform build_sg_platform(const Schedule &s, const Fabric &f, const std::vector<int> &replicas, double host_flops);

} // namespace cpsim
