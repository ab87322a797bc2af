// The hardware a schedule runs on, as plain data: GPU, node and network parameters in SI units.
// Built-in descriptions (hardware/descriptions/*.json) and inline scenario objects both become this.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <string>

namespace cpsim {

struct GpuSpec {
  std::string name;
  double peak_flops = 0;            // dense bf16/fp16 tensor peak, FLOP/s
  double hbm_bytes_per_s = 0;       // HBM bandwidth
  double memory_bytes = 0;          // device memory capacity
  int sm_count = 0;
  double attn_fwd_efficiency = 0.5; // achieved fraction of peak for attention forward tiles
  double attn_bwd_efficiency = 0.4; // same for backward
  double launch_overhead_s = 5e-6;  // fixed cost per kernel launch
  double overlap_slowdown = 1.0;    // compute slowdown factor while communication runs beside it
};

struct LinkSpec {
  double bandwidth_bytes_per_s = 0; // per direction; inter-node: per NIC
  double latency_s = 0;
  int nics_per_node = 0;            // inter-node only
};

/** How the NICs of different nodes are wired (read by the discrete-event engine; the analytic engine
 *  sees only bandwidth and latency). Both are two-level leaf/spine fat trees. */
enum class FabricTopology {
  RAIL_FAT_TREE, // leaf switch per (scalable unit, rail): NIC i of every node of a unit on leaf i
  FAT_TREE,      // leaves take consecutive NIC ports regardless of rail
};

std::string to_string(FabricTopology t);

struct ClusterSpec {
  std::string name;
  GpuSpec gpu;
  int gpus_per_node = 1;
  int nodes = 1;
  LinkSpec intra_node;
  LinkSpec inter_node;
  double fabric_oversubscription = 1.0; // >1: core of the fat tree has less bandwidth than the NICs
  FabricTopology fabric_topology = FabricTopology::RAIL_FAT_TREE;
  int leaf_ports = 32; // NIC ports under one leaf switch (rail fat tree: nodes per scalable unit)

  int world_size() const { return gpus_per_node * nodes; }
  int node_of(int rank) const { return rank / gpus_per_node; }
  bool same_node(int a, int b) const { return node_of(a) == node_of(b); }
  /** Per-GPU share of the node's NIC bandwidth, bytes/s per direction. */
  double inter_node_bytes_per_s_per_gpu() const {
    return inter_node.bandwidth_bytes_per_s * inter_node.nics_per_node / gpus_per_node;
  }
};

/** Parses the documented hardware object; `path` is where it sits in the user's file. */
ClusterSpec cluster_from_json(const Json& j, const std::string& path);
Json cluster_to_json(const ClusterSpec& c);

} // namespace cpsim
