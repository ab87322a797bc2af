// Communication cost v1 (schedules.md 1.5). Collectives follow NCCL's ring algorithm: W-1 steps
// each paying the slowest link of the ring; all-to-all is W-1 pairwise exchanges whose bytes split
// into intra-node and inter-node shares, the slower share deciding.
#include "cpsim/model/comm_cost.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

CommCostModel::CommCostModel(const ClusterSpec& c, std::vector<int> placement) : c_(c), placement_(std::move(placement)) {}

bool CommCostModel::same_node(int a, int b) const {
  return c_.same_node(placement_.at(size_t(a)), placement_.at(size_t(b)));
}

double CommCostModel::link_bw(int a, int b) const {
  return same_node(a, b) ? c_.intra_node.bandwidth_bytes_per_s
                         : c_.inter_node_bytes_per_s_per_gpu() / c_.fabric_oversubscription;
}

double CommCostModel::link_lat(int a, int b) const {
  return same_node(a, b) ? c_.intra_node.latency_s : c_.inter_node.latency_s;
}

double CommCostModel::p2p_s(int src, int dst, int64_t bytes) const {
  return link_lat(src, dst) + double(bytes) / link_bw(src, dst);
}

int64_t CommCostModel::collective_bytes_sent(CollectiveKind kind, int n, int64_t bytes) {
  switch (kind) {
  case CollectiveKind::ALL_GATHER:
  case CollectiveKind::REDUCE_SCATTER: return int64_t(n - 1) * bytes;
  case CollectiveKind::ALL_TO_ALL: return bytes / n * (n - 1);
  case CollectiveKind::ALL_REDUCE: return 2 * bytes / n * (n - 1);
  }
  return 0;
}

double CommCostModel::collective_s(CollectiveKind kind, const std::vector<int>& group, int64_t bytes) const {
  const int n = static_cast<int>(group.size());
  CPSIM_ASSERT(n >= 2, "collective over fewer than two ranks");
  // Ring neighbours decide the ring algorithms; the slowest hop sets the pace.
  double ring_bw = 1e300, ring_lat = 0;
  for (int i = 0; i < n; ++i) {
    int a = group[size_t(i)], b = group[size_t((i + 1) % n)];
    ring_bw = std::min(ring_bw, link_bw(a, b));
    ring_lat = std::max(ring_lat, link_lat(a, b));
  }
  switch (kind) {
  case CollectiveKind::ALL_GATHER:
  case CollectiveKind::REDUCE_SCATTER: return (n - 1) * (ring_lat + double(bytes) / ring_bw);
  case CollectiveKind::ALL_REDUCE: return 2 * (n - 1) * (ring_lat + double(bytes) / n / ring_bw);
  case CollectiveKind::ALL_TO_ALL: {
    // Pairwise exchange: rank g[0] sends bytes/n to each peer; count peers on and off its node.
    double chunk = double(bytes) / n, intra = 0, inter = 0, lat = 0;
    for (int i = 1; i < n; ++i) {
      bool local = same_node(group[0], group[size_t(i)]);
      (local ? intra : inter) += chunk;
      lat = std::max(lat, link_lat(group[0], group[size_t(i)]));
    }
    double t_intra = intra / c_.intra_node.bandwidth_bytes_per_s;
    double t_inter = inter / (c_.inter_node_bytes_per_s_per_gpu() / c_.fabric_oversubscription);
    return (n - 1) * lat + std::max(t_intra, t_inter);
  }
  }
  return 0;
}

} // namespace cpsim
