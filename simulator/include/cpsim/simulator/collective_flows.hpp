// How the discrete-event engine turns IR communication into flows, in one place for the platform
// builder (which needs every route in advance), the replica collapse and the executor. Collectives
// follow NCCL's ring algorithm: member i sends to member i+1 (ring order = coll_group order) in
// steps, step s of member i waiting for its own step s-1 and for what member i-1 sent at step s-1.
// All-to-all is NCCL's grouped send/recv: every member sends bytes/n to every other at once.
#pragma once

#include "cpsim/model/schedule.hpp"

#include <compare>
#include <cstdint>
#include <vector>

namespace cpsim {

struct RankPair {
  int src = 0;
  int dst = 0;
  auto operator<=>(const RankPair &) const = default;
};

/** Every distinct (src, dst) pair of logical ranks that some flow of the schedule uses, sorted. */
std::vector<RankPair> flow_pairs(const Schedule &s);

/** Steps of the ring algorithm for a ring collective of n members (0 for all-to-all). */
int ring_steps(CollectiveKind kind, int n);
/** Bytes one member sends per ring step (all-to-all: per peer). `bytes` as Op documents it. */
double step_bytes(CollectiveKind kind, int n, int64_t bytes);

} // namespace cpsim
