// Ring step counts and sizes match CommCostModel's closed forms, so that a contention-free ring
// collective takes the same time in both engines.
#include "cpsim/simulator/collective_flows.hpp"

#include <algorithm>

namespace cpsim {

std::vector<RankPair> flow_pairs(const Schedule &s) {
  std::vector<RankPair> pairs;
  std::vector<int> seen_tags;
  for (const auto &prog : s.ranks)
    for (const Op &op : prog.ops) {
      if (op.kind == OpKind::SEND) {
        pairs.push_back({prog.rank, op.peer});
      } else if (op.kind == OpKind::COLLECTIVE && op.coll_group.size() >= 2 && op.coll_group.front() == prog.rank) {
        const auto &g = op.coll_group; // listed once, by the first member
        const size_t n = g.size();
        if (op.coll == CollectiveKind::ALL_TO_ALL) {
          for (size_t i = 0; i < n; ++i)
            for (size_t j = 0; j < n; ++j)
              if (i != j)
                pairs.push_back({g[i], g[j]});
        } else {
          for (size_t i = 0; i < n; ++i)
            pairs.push_back({g[i], g[(i + 1) % n]});
        }
      }
    }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  return pairs;
}

int ring_steps(CollectiveKind kind, int n) {
  switch (kind) {
  case CollectiveKind::ALL_GATHER:
  case CollectiveKind::REDUCE_SCATTER:
    return n - 1;
  case CollectiveKind::ALL_REDUCE:
    return 2 * (n - 1);
  case CollectiveKind::ALL_TO_ALL:
    return 0;
  }
  return 0;
}

double step_bytes(CollectiveKind kind, int n, int64_t bytes) {
  switch (kind) {
  case CollectiveKind::ALL_GATHER:
  case CollectiveKind::REDUCE_SCATTER:
    return double(bytes);
  case CollectiveKind::ALL_REDUCE:
  case CollectiveKind::ALL_TO_ALL:
    return double(bytes) / n;
  }
  return 0;
}

} // namespace cpsim
