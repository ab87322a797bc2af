// Communication cost model v1: latency + bytes / bandwidth, the link picked by where the two GPUs
// sit; collectives decomposed the way NCCL's ring algorithm moves bytes.
#pragma once

#include "cpsim/model/cluster.hpp"
#include "cpsim/model/schedule.hpp"

#include <vector>

namespace cpsim {

class CommCostModel {
public:
  CommCostModel(const ClusterSpec& c, std::vector<int> placement);

  bool same_node(int rank_a, int rank_b) const;
  /** One message from rank a to rank b, ranks being logical (placement maps them to GPUs). */
  double p2p_s(int src, int dst, int64_t bytes) const;
  /** Whole collective as seen by every member (bytes as Op documents them). */
  double collective_s(CollectiveKind kind, const std::vector<int>& group, int64_t bytes) const;
  /** Bytes one member sends during the collective. */
  static int64_t collective_bytes_sent(CollectiveKind kind, int group_size, int64_t bytes);

private:
  double link_bw(int a, int b) const;
  double link_lat(int a, int b) const;
  ClusterSpec c_;
  std::vector<int> placement_;
};

} // namespace cpsim
