// The fat-tree fabric of the discrete-event engine: which links a route crosses, their capacities,
// the replica collapse built on them, and topology inputs the engine cannot build as named errors.
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/simulator/fabric.hpp"
#include "cpsim/simulator/replica_collapse.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;

namespace {
ClusterSpec cluster(const std::string &hw, const std::string &topology, int leaf_ports, double oversub = 1.0) {
  Json j = test::scenario_json("ring", 1, {4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, hw);
  Json h = scenario_to_json(test::make_scenario(j))["hardware"];
  h["inter_node"]["topology"] = topology;
  h["inter_node"]["leaf_ports"] = leaf_ports;
  h["fabric_oversubscription"] = oversub;
  return cluster_from_json(h, "hardware");
}

std::vector<std::string> names(const Fabric &f, int64_t a, int64_t b) {
  std::vector<int64_t> ids;
  f.route(a, b, ids);
  std::vector<std::string> out;
  for (int64_t id : ids)
    out.push_back(f.link(id).name);
  return out;
}
} // namespace

TEST_CASE("simulator::fabric: rail-optimized routes cross the spine only between rails or units") {
  // 4 DGX nodes, 2 nodes per scalable unit: leaves (unit, rail) = unit * 8 + rail
  Fabric f(cluster("dgx-h100:4", "rail_fat_tree", 2, 2.0));
  CHECK(names(f, 3, 5) == std::vector<std::string>{"nvl_up3", "nvl_down5"});
  CHECK(names(f, 3, 3).empty());
  CHECK(names(f, 3, 11) == std::vector<std::string>{"nic_up3", "nic_down11"}); // same unit, same rail
  CHECK(names(f, 7, 8) == std::vector<std::string>{"nic_up7", "leaf_up7", "leaf_down0", "nic_down8"});
  CHECK(names(f, 0, 16) == std::vector<std::string>{"nic_up0", "leaf_up0", "leaf_down8", "nic_down16"});
  std::vector<int64_t> ids;
  f.route(7, 8, ids);
  CHECK(f.link(ids[0]).bandwidth_bytes_per_s == Approx(50e9));
  CHECK(f.link(ids[0]).latency_s == Approx(10e-6));
  CHECK(f.link(ids[1]).bandwidth_bytes_per_s == Approx(2 * 50e9 / 2.0)); // 2 ports / oversubscription 2
  CHECK(f.link(ids[1]).latency_s == 0.0);
}

TEST_CASE("simulator::fabric: a plain fat tree groups consecutive ports, shared NICs are one port") {
  Fabric f(cluster("dgx-h100:4", "fat_tree", 16, 1.5)); // two nodes per leaf
  CHECK(names(f, 7, 8) == std::vector<std::string>{"nic_up7", "nic_down8"});
  CHECK(names(f, 15, 16) == std::vector<std::string>{"nic_up15", "leaf_up0", "leaf_down1", "nic_down16"});
  Fabric p4d(cluster("a100-40g-p4d:2", "fat_tree", 32)); // 4 NICs for 8 GPUs: GPUs 2k and 2k+1 share NIC k
  CHECK(p4d.ports_per_node() == 4);
  CHECK(p4d.port_bytes_per_s() == Approx(12.5e9));
  CHECK(names(p4d, 3, 9) == std::vector<std::string>{"nic_up1", "nic_down4"});
  Fabric one(cluster("h100-sxm-1", "fat_tree", 32)); // 1 GPU driving 8 NICs: one port of 8 x 50 GB/s
  CHECK(one.port_bytes_per_s() == Approx(400e9));
}

TEST_CASE("simulator::fabric: topology inputs the engine cannot build are named errors") {
  ClusterSpec c = cluster("dgx-h100:2", "fat_tree", 32);
  c.inter_node.nics_per_node = 3;
  CHECK_THROWS_WITH(Fabric(c), Catch::Contains("inter_node.nics_per_node = 3") && Catch::Contains("divide"));
  Json j = test::scenario_json("ring", 2, {4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, "dgx-h100:2");
  Json h = scenario_to_json(test::make_scenario(j))["hardware"];
  Json bad = h;
  bad["inter_node"]["topology"] = "torus";
  CHECK_THROWS_WITH(cluster_from_json(bad, "hardware"), Catch::Contains("hardware.inter_node.topology") &&
                                                            Catch::Contains("torus") &&
                                                            Catch::Contains("rail_fat_tree"));
  bad = h;
  bad["inter_node"]["leaf_ports"] = 0;
  CHECK_THROWS_WITH(cluster_from_json(bad, "hardware"), Catch::Contains("hardware.inter_node.leaf_ports"));
  bad = h;
  bad["inter_node"]["leaf_ports"] = "many";
  CHECK_THROWS_AS(cluster_from_json(bad, "hardware"), UserError);
  bad = h;
  bad["inter_node"]["spine_count"] = 4;
  CHECK_THROWS_WITH(cluster_from_json(bad, "hardware"), Catch::Contains("spine_count"));
}

TEST_CASE("simulator::replica_collapse: replicas sharing leaf uplinks are simulated together, others once") {
  // CP groups of 16 GPUs (2 DGX nodes); the ring's node-crossing hops go from rail 7 to rail 0.
  auto collapse = [](const std::string &topology, int leaf_ports, double oversub = 2.0, int dp = 4) {
    Json j = test::scenario_json("ring", 16, {16 * 256}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, "dgx-h100:8");
    j["parallel"]["dp"] = dp;
    Json h = scenario_to_json(test::make_scenario(j))["hardware"];
    h["inter_node"]["topology"] = topology;
    h["inter_node"]["leaf_ports"] = leaf_ports;
    h["fabric_oversubscription"] = oversub;
    j["hardware"] = h;
    Scenario sc = test::make_scenario(j);
    Schedule s = generate_schedule(sc);
    Fabric f(sc.cluster);
    return collapse_replicas(s, f, flow_pairs(s));
  };
  // rail fat tree, 4 nodes per unit: replicas {0,1} and {2,3} each cross one unit's rail-7 uplink
  ReplicaCollapse rail = collapse("rail_fat_tree", 4);
  CHECK(rail.components == 2);
  CHECK(rail.classes == 1);
  CHECK(rail.simulated == std::vector<int>{0, 1});
  // plain fat tree, 2 nodes per leaf: each replica stays under its own leaf
  ReplicaCollapse plain = collapse("fat_tree", 16);
  CHECK(plain.components == 4);
  CHECK(plain.classes == 1);
  CHECK(plain.simulated == std::vector<int>{0});
  // one unit for everything: all four replicas contend, all are simulated
  ReplicaCollapse one = collapse("rail_fat_tree", 8);
  CHECK(one.components == 1);
  CHECK(one.simulated == std::vector<int>{0, 1, 2, 3});
  // 3 replicas, 2 per unit: a pair and a lone replica are different kinds, both simulated
  ReplicaCollapse odd = collapse("rail_fat_tree", 4, 2.0, 3);
  CHECK(odd.components == 2);
  CHECK(odd.classes == 2);
  CHECK(odd.simulated == std::vector<int>{0, 1, 2});
  // without oversubscription the uplinks can never saturate and are left out: nothing is shared
  ReplicaCollapse full = collapse("rail_fat_tree", 8, 1.0);
  CHECK(full.components == 4);
  CHECK(full.simulated == std::vector<int>{0});
}

TEST_CASE("simulator::fabric: without oversubscription routes skip the leaf uplinks") {
  Fabric f(cluster("dgx-h100:4", "rail_fat_tree", 2, 1.0));
  CHECK(names(f, 7, 8) == std::vector<std::string>{"nic_up7", "nic_down8"});
}
