// Link ids and routes of the fat trees described in fabric.hpp. A link id packs kind and index so
// that routes of any size cost no table: the engine creates SimGrid links only for ids it meets.
#include "cpsim/simulator/fabric.hpp"

#include "cpsim/model/errors.hpp"

namespace cpsim {

Fabric::Fabric(const ClusterSpec &c) : c_(c) {
  const int gpn = c.gpus_per_node, nics = c.inter_node.nics_per_node;
  if (gpn % nics == 0) { // several GPUs share one NIC (p4d: 2 per NIC)
    ports_per_node_ = nics;
    gpus_per_port_ = gpn / nics;
    port_bytes_per_s_ = c.inter_node.bandwidth_bytes_per_s;
  } else if (nics % gpn == 0) { // a GPU drives several NICs: one port of their summed bandwidth
    ports_per_node_ = gpn;
    gpus_per_port_ = 1;
    port_bytes_per_s_ = c.inter_node.bandwidth_bytes_per_s * (nics / gpn);
  } else {
    throw UserError("hardware.inter_node.nics_per_node = " + std::to_string(nics) +
                    ": the discrete-event engine needs it to divide gpus_per_node (" + std::to_string(gpn) +
                    ") or be a multiple of it, to attach each GPU to NIC ports");
  }
}

int64_t Fabric::port_of(int64_t gpu) const {
  const int64_t node = gpu / c_.gpus_per_node, local = gpu % c_.gpus_per_node;
  return node * ports_per_node_ + local / gpus_per_port_;
}

int64_t Fabric::leaf_of(int64_t gpu) const {
  const int64_t port = port_of(gpu);
  if (c_.fabric_topology == FabricTopology::FAT_TREE)
    return port / c_.leaf_ports;
  // rail-optimized: a scalable unit of leaf_ports nodes has one leaf per rail
  const int64_t node = port / ports_per_node_, rail = port % ports_per_node_;
  return (node / c_.leaf_ports) * ports_per_node_ + rail;
}

void Fabric::route(int64_t a, int64_t b, std::vector<int64_t> &out) const {
  out.clear();
  CPSIM_ASSERT(a >= 0 && b >= 0 && a < gpus() && b < gpus(), "route outside the cluster");
  if (a == b)
    return;
  if (a / c_.gpus_per_node == b / c_.gpus_per_node) {
    out.push_back(id(NVL_UP, a));
    out.push_back(id(NVL_DOWN, b));
    return;
  }
  out.push_back(id(NIC_UP, port_of(a)));
  const int64_t la = leaf_of(a), lb = leaf_of(b);
  // Without oversubscription a leaf uplink carries at most what its leaf_ports NIC ports can feed
  // it, so it can never be the bottleneck: leaving it out changes no rate and keeps flows of
  // different leaves from being coupled in one sharing system (and replicas from one component).
  if (la != lb && c_.fabric_oversubscription > 1.0) {
    out.push_back(id(LEAF_UP, la));
    out.push_back(id(LEAF_DOWN, lb));
  }
  out.push_back(id(NIC_DOWN, port_of(b)));
}

FabricLink Fabric::link(int64_t link_id) const {
  const auto kind = Kind(link_id % KINDS);
  const int64_t index = link_id / KINDS;
  const double leaf_bytes_per_s = double(c_.leaf_ports) * port_bytes_per_s_ / c_.fabric_oversubscription;
  // a route's latency sits on its first link, so a route's total is the description's figure
  switch (kind) {
  case NVL_UP:
    return {"nvl_up" + std::to_string(index), c_.intra_node.bandwidth_bytes_per_s, c_.intra_node.latency_s};
  case NVL_DOWN:
    return {"nvl_down" + std::to_string(index), c_.intra_node.bandwidth_bytes_per_s, 0.0};
  case NIC_UP:
    return {"nic_up" + std::to_string(index), port_bytes_per_s_, c_.inter_node.latency_s};
  case NIC_DOWN:
    return {"nic_down" + std::to_string(index), port_bytes_per_s_, 0.0};
  case LEAF_UP:
    return {"leaf_up" + std::to_string(index), leaf_bytes_per_s, 0.0};
  case LEAF_DOWN:
    return {"leaf_down" + std::to_string(index), leaf_bytes_per_s, 0.0};
  case KINDS:
    break;
  }
  CPSIM_ASSERT(false, "bad link id");
  return {};
}

} // namespace cpsim
