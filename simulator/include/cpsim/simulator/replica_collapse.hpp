// Which data-parallel replicas of a schedule the discrete-event engine must simulate. Replicas
// whose flows cross a common link contend, so they form one component and are simulated
// together; components that are the same up to a renaming of links (same routes, capacities and
// latencies, replica by replica) evolve identically, so one per class is simulated. Nothing is
// assumed about sharing: a link crossed by two replicas is simulated with both replicas' flows.
#pragma once

#include "cpsim/simulator/collective_flows.hpp"
#include "cpsim/simulator/fabric.hpp"

#include <vector>

namespace cpsim {

struct ReplicaCollapse {
  std::vector<int> simulated; // replicas to simulate, ascending
  int components = 0;         // sets of replicas joined by shared links
  int classes = 0;            // components distinct up to relabelling of links
};

/** GPU index of logical rank r in replica k. */
int64_t replica_gpu(const Schedule &s, int replica, int rank);

ReplicaCollapse collapse_replicas(const Schedule &s, const Fabric &f, const std::vector<RankPair> &pairs);

} // namespace cpsim
