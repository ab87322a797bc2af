// The discrete-event engine: agrees with the analytic engine where no two flows meet, shows the
// slowdown max-min bandwidth sharing predicts where they do (hand-computed), and keeps the
// analytic engine's error behaviour. SimGrid holds global state, so each TEST_CASE runs the
// engine once (catch_discover_tests gives each its own process).
#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/simulator/analytic_engine.hpp"
#include "cpsim/simulator/des_engine.hpp"
#include "support/deadlocked_plan.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;

namespace {
/** Runs both engines and requires the same step, per-rank figures and per-op times within 1 %. */
DesStats check_agreement(const Json &scenario) {
  Scenario sc = test::make_scenario(scenario);
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  SimResult a = run_analytic(s, sc.workload, sc.cluster, k);
  DesStats st;
  SimResult d = run_des(s, sc.workload, sc.cluster, k, &st);
  CHECK(d.engine == "des");
  CHECK(d.step_time_s == Approx(a.step_time_s).epsilon(0.01));
  REQUIRE(d.ranks.size() == a.ranks.size());
  for (size_t r = 0; r < a.ranks.size(); ++r) {
    CHECK(d.ranks[r].finish_s == Approx(a.ranks[r].finish_s).epsilon(0.01));
    CHECK(d.ranks[r].comm_s == Approx(a.ranks[r].comm_s).epsilon(0.01));
    CHECK(d.ranks[r].exposed_comm_s == Approx(a.ranks[r].exposed_comm_s).epsilon(0.01).margin(1e-7));
    CHECK(d.ranks[r].bytes_sent == a.ranks[r].bytes_sent);
  }
  REQUIRE(d.records.size() == a.records.size());
  auto key = [](const OpRecord &x, const OpRecord &y) { return std::tie(x.rank, x.op) < std::tie(y.rank, y.op); };
  std::sort(a.records.begin(), a.records.end(), key);
  std::sort(d.records.begin(), d.records.end(), key);
  for (size_t i = 0; i < a.records.size(); ++i) {
    CHECK(d.records[i].end_s == Approx(a.records[i].end_s).epsilon(0.01).margin(1e-7));
    CHECK(d.records[i].start_s == Approx(a.records[i].start_s).epsilon(0.01).margin(1e-7));
  }
  return st;
}

Json with_hardware(Json j, const std::function<void(Json &)> &edit) {
  Json h = scenario_to_json(test::make_scenario(j))["hardware"];
  edit(h);
  j["hardware"] = h;
  return j;
}

/**
 * 4 nodes of 2 GPUs, one 10 GB/s NIC per GPU, one rail-optimized unit (leaf_ports 8) whose leaf
 * uplinks carry 8 x 10 / 4 = 20 GB/s. A ring of 4 ranks on 2 nodes crosses from rail 1 to rail 0
 * twice (1->2 and 3->0), so each replica puts 2 flows on the rail-1 leaf uplink.
 */
Json shared_uplink_ring(int dp, int nodes = 4, int leaf_ports = 8) {
  Json j = test::scenario_json("ring", 4, {4 * 4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, "dgx-h100:2");
  j["parallel"]["dp"] = dp;
  return with_hardware(j, [&](Json &h) {
    h["gpus_per_node"] = 2;
    h["nodes"] = nodes;
    h["intra_node"] = {{"bandwidth_GBps", 300}, {"latency_us", 2}};
    h["inter_node"] = {{"bandwidth_GBps", 10},
                       {"latency_us", 5},
                       {"nics_per_node", 2},
                       {"topology", "rail_fat_tree"},
                       {"leaf_ports", leaf_ports}};
    h["fabric_oversubscription"] = 4.0;
  });
}

/** Duration of rank `rank`'s first KV send (ring step 0, all ranks at once) and its bytes. */
std::pair<double, int64_t> first_send(const SimResult &r, const Schedule &s, int rank) {
  for (const OpRecord &rec : r.records) {
    const Op &op = s.ranks[size_t(rec.rank)].ops[size_t(rec.op)];
    if (rec.rank == rank && op.kind == OpKind::SEND && op.label == "fwd kv send 0")
      return {rec.end_s - rec.start_s, op.bytes};
  }
  FAIL("no first send");
  return {0, 0};
}

void check_shared_uplink(int dp, double flow_GBps) {
  Scenario sc = test::make_scenario(shared_uplink_ring(dp));
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  DesStats st;
  SimResult d = run_des(s, sc.workload, sc.cluster, k, &st);
  CHECK(st.simulated_replicas == dp);          // the replicas meet on the uplink: none is collapsed away
  auto [inter_s, bytes] = first_send(d, s, 1); // rank 1 -> rank 2 crosses the uplink
  CHECK(inter_s == Approx(5e-6 + double(bytes) / (flow_GBps * 1e9)).epsilon(1e-6));
  auto [intra_s, intra_bytes] = first_send(d, s, 0); // rank 0 -> rank 1 stays on NVSwitch
  CHECK(intra_s == Approx(2e-6 + double(intra_bytes) / 300e9).epsilon(1e-6));
  // the analytic engine divides every inter-node transfer by the oversubscription, whoever else runs
  CommCostModel c(sc.cluster, s.placement);
  CHECK(c.p2p_s(1, 2, bytes) == Approx(5e-6 + double(bytes) / 2.5e9));
}
} // namespace

TEST_CASE("simulator::des: ring forward on one node agrees with the analytic engine") {
  Json j = test::scenario_json("ring", 4, {4 * 4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128);
  check_agreement(with_hardware(j, [](Json &h) { h["intra_node"]["bandwidth_GBps"] = 2.0; })); // comm-bound
}

TEST_CASE("simulator::des: zigzag forward across two DGX nodes agrees with the analytic engine") {
  check_agreement(
      test::scenario_json("zigzag", 16, {32 * 512}, Json{{"kind", "causal"}}, "fwd", 8, 8, 128, "dgx-h100:2"));
}

TEST_CASE("simulator::des: ring all-gather collectives agree with the analytic engine") {
  check_agreement(test::scenario_json("te_allgather", 4, {8 * 1024}, Json{{"kind", "causal"}}, "fwd", 8, 8, 128));
}

TEST_CASE("simulator::des: replicas under their own leaves are simulated once and agree") {
  Json j = test::scenario_json("zigzag", 16, {32 * 512}, Json{{"kind", "causal"}}, "fwd", 8, 8, 128, "dgx-h100:8");
  j["parallel"]["dp"] = 4;
  DesStats st = check_agreement(with_hardware(j, [](Json &h) {
    h["inter_node"]["topology"] = "fat_tree";
    h["inter_node"]["leaf_ports"] = 16;
  }));
  CHECK(st.replicas == 4);
  CHECK(st.components == 4);
  CHECK(st.simulated_replicas == 1);
}

TEST_CASE("simulator::des: one replica's two flows share the uplink but stay NIC-bound (10 GB/s each)") {
  check_shared_uplink(1, 10.0); // 2 flows x 10 GB/s fit in 20 GB/s
}

TEST_CASE("simulator::des: two replicas on one uplink halve each flow (20 GB/s / 4 flows)") {
  check_shared_uplink(2, 5.0);
}

TEST_CASE("simulator::des: with replicas of different fates the slowest one is reported") {
  // 6 nodes, units of 4 (uplink 4 x 10 / 4 = 10 GB/s): replicas 0 and 1 share unit 0's uplink
  // (4 flows, 2.5 GB/s each), replica 2 is alone in unit 1 (2 flows, 5 GB/s each).
  Scenario sc = test::make_scenario(shared_uplink_ring(3, 6, 4));
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  DesStats st;
  SimResult d = run_des(s, sc.workload, sc.cluster, k, &st);
  CHECK(st.classes == 2);
  CHECK(st.simulated_replicas == 3);
  CHECK((st.reported_replica == 0 || st.reported_replica == 1));
  auto [inter_s, bytes] = first_send(d, s, 1);
  CHECK(inter_s == Approx(5e-6 + double(bytes) / 2.5e9).epsilon(1e-6));
}

TEST_CASE("simulator::des: Ulysses all-to-all across nodes shares the NIC (hand-computed)") {
  // 2 nodes x 2 GPUs, one 10 GB/s NIC per node; cp = 4: each rank sends bytes/4 to 3 peers, 2 of
  // them on the other node, so the NIC carries 4 equal flows at once: lat + 4 (bytes/4) / 10 GB/s.
  Json j = test::scenario_json("ulysses", 4, {4 * 1024}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, "dgx-h100:1");
  j = with_hardware(j, [](Json &h) {
    h["gpus_per_node"] = 2;
    h["nodes"] = 2;
    h["intra_node"] = {{"bandwidth_GBps", 300}, {"latency_us", 2}};
    h["inter_node"] = {{"bandwidth_GBps", 10}, {"latency_us", 5}, {"nics_per_node", 1}};
  });
  Scenario sc = test::make_scenario(j);
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  SimResult d = run_des(s, sc.workload, sc.cluster, k);
  int checked = 0;
  for (const OpRecord &rec : d.records) {
    const Op &op = s.ranks[size_t(rec.rank)].ops[size_t(rec.op)];
    if (op.kind != OpKind::COLLECTIVE || op.group >= 0)
      continue;
    // every collective runs alone (the schedule orders them), so the formula holds for each
    const double chunk = double(op.bytes) / 4;
    CHECK(rec.end_s - rec.start_s == Approx(5e-6 + 4 * chunk / 10e9).epsilon(1e-6));
    ++checked;
  }
  CHECK(checked > 0);
}

TEST_CASE("simulator::des: a replica outside the cluster is a named error") {
  Json j = test::scenario_json("ring", 4, {4 * 4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, "dgx-h100:1");
  Scenario sc = test::make_scenario(j);
  Schedule s = generate_schedule(sc);
  s.replicas = 3;
  s.replica_stride = 4; // replica 2 would need GPUs 8..11 of an 8-GPU node
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  CHECK_THROWS_WITH(run_des(s, sc.workload, sc.cluster, k),
                    Catch::Contains("parallel.dp = 3") && Catch::Contains("GPU 8"));
}

TEST_CASE("simulator::des: a plan that deadlocks is a named error") {
  Schedule t = test::deadlocked_two_rank_plan();
  Scenario sc = test::make_scenario(
      test::scenario_json("ring", 2, {4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128, "h100-sxm-2"));
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, t.tile_m, t.tile_n);
  CHECK_THROWS_WITH(run_des(t, sc.workload, sc.cluster, k),
                    Catch::Contains("deadlocks") && Catch::Contains("rank 0") && Catch::Contains("4 ops never ran"));
}
