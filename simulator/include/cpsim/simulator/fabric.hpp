// The network the discrete-event engine routes flows over, as plain data (no SimGrid here, so the
// routing can be tested and reasoned about alone): per GPU an NVSwitch port (one link each way),
// per node NIC ports, and a two-level leaf/spine fat tree, rail-optimized or plain, whose leaf
// uplinks carry the oversubscription. Switches themselves are non-blocking and have no link
// (SimGrid pitfall 10: one shared "switch" link would couple every flow of the cluster).
//
//   GPU a --nvl_up(a)--> [NVSwitch] --nvl_down(b)--> GPU b                      same node
//   GPU a --nic_up(port a)--> leaf --leaf_up--> [spine] --leaf_down--> leaf --nic_down(port b)--> GPU b
//        (leaf_up/leaf_down only when the ports hang off different leaves and the fabric is oversubscribed)
#pragma once

#include "cpsim/model/cluster.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim {

struct FabricLink {
  std::string name;
  double bandwidth_bytes_per_s = 0;
  double latency_s = 0;
};

class Fabric {
public:
  /** Checks the hardware's topology keys; UserError naming the key when the fabric cannot be built. */
  explicit Fabric(const ClusterSpec &c);

  int64_t gpus() const { return int64_t(c_.gpus_per_node) * c_.nodes; }
  /** NIC ports per node the engine models (a port is one NIC, or a GPU's share of several). */
  int ports_per_node() const { return ports_per_node_; }
  double port_bytes_per_s() const { return port_bytes_per_s_; }
  /** Leaf switch of a GPU's NIC port. */
  int64_t leaf_of(int64_t gpu) const;

  /** Link ids a flow from GPU a to GPU b crosses, in order (cleared first; empty when a == b). */
  void route(int64_t gpu_a, int64_t gpu_b, std::vector<int64_t> &out) const;
  /** Name, bandwidth and latency of a link id returned by route(). */
  FabricLink link(int64_t id) const;

private:
  enum Kind : int64_t { NVL_UP, NVL_DOWN, NIC_UP, NIC_DOWN, LEAF_UP, LEAF_DOWN, KINDS };
  static int64_t id(Kind k, int64_t index) { return index * KINDS + k; }
  int64_t port_of(int64_t gpu) const; // global NIC port index

  ClusterSpec c_;
  int ports_per_node_ = 1;
  int gpus_per_port_ = 1;
  double port_bytes_per_s_ = 0;
};

} // namespace cpsim
