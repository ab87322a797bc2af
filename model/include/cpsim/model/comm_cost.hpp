// Communication cost model v1: latency + bytes / bandwidth, the link picked by where the two GPUs
// sit; collectives decomposed the way NCCL's ring algorithm moves bytes.
#pragma once

#include "cpsim/model/cluster.hpp"
#include "cpsim/model/schedule.hpp"

#include <vector>

namespace cpsim {

/** What an engine asks of a communication model; the roofline v1 below and calibrated profiles
 *  (calibrate/) both answer it, so engines never know which one they were given. */
class CommTimeModel {
public:
  virtual ~CommTimeModel() = default;
  /** One message from rank a to rank b, ranks being logical (placement maps them to GPUs). */
  virtual double p2p_s(int src, int dst, int64_t bytes) const = 0;
  /** Whole collective as seen by every member (bytes as Op documents them). */
  virtual double collective_s(CollectiveKind kind, const std::vector<int>& group, int64_t bytes) const = 0;
};

class CommCostModel final : public CommTimeModel {
public:
  CommCostModel(const ClusterSpec& c, std::vector<int> placement);

  bool same_node(int rank_a, int rank_b) const;
  double p2p_s(int src, int dst, int64_t bytes) const override;
  double collective_s(CollectiveKind kind, const std::vector<int>& group, int64_t bytes) const override;
  /** Bytes one member sends during the collective. */
  static int64_t collective_bytes_sent(CollectiveKind kind, int group_size, int64_t bytes);

private:
  double link_bw(int a, int b) const;
  double link_lat(int a, int b) const;
  ClusterSpec c_;
  std::vector<int> placement_;
};

} // namespace cpsim
