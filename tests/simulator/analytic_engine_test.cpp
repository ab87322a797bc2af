// The analytic engine on cases computable by hand: a communication-bound ring forward takes
// (W-1) max(t_comp, t_comm) + t_comp, a compute-bound one W t_comp; exposed communication and
// idle time; a deadlocking plan is a named error.
#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/model/schedule_json.hpp"
#include "cpsim/simulator/analytic_engine.hpp"
#include "support/deadlocked_plan.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;

namespace {
/** A full-mask ring forward; the hardware's link bandwidth is set so the ring is comm- or compute-bound. */
Scenario ring_scenario(int W, double link_GBps) {
  Json j = test::scenario_json("ring", W, {int64_t(W) * 4096}, Json{{"kind", "full"}}, "fwd", 8, 8, 128);
  Scenario base = test::make_scenario(j);
  Json hw = scenario_to_json(base)["hardware"];
  hw["intra_node"]["bandwidth_GBps"] = link_GBps;
  j["hardware"] = hw;
  return test::make_scenario(j);
}

struct StepTimes {
  double comp, comm;
};

StepTimes step_times(const Scenario& sc, const Schedule& s) {
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  CommCostModel c(sc.cluster, s.placement);
  double attn = 0, merge = 0, comm = 0;
  for (const auto& op : s.ranks[0].ops) {
    if (op.kind == OpKind::ATTENTION)
      attn = k.attention_s(op);
    if (op.kind == OpKind::MERGE)
      merge = std::max(merge, k.merge_s(op));
    if (op.kind == OpKind::SEND)
      comm = c.p2p_s(0, 1, op.bytes);
  }
  return {attn + merge, comm};
}
} // namespace

TEST_CASE("simulator::analytic: communication-bound ring forward is (W-1) t_comm + t_comp") {
  const int W = 4;
  Scenario sc = ring_scenario(W, 2.0); // slow link
  Schedule s = generate_schedule(sc);
  StepTimes t = step_times(sc, s);
  REQUIRE(t.comm > t.comp);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  SimResult r = run_analytic(s, sc.workload, sc.cluster, k);
  CHECK(r.step_time_s == Approx((W - 1) * t.comm + t.comp).epsilon(1e-9));
  for (const auto& st : r.ranks) {
    CHECK(st.comm_s == Approx((W - 1) * t.comm));
    CHECK(st.compute_s == Approx(W * t.comp));
    // every transfer overlaps the compute of the KV block in hand for t_comp: exposed = (W-1)(t_comm - t_comp)
    CHECK(st.exposed_comm_s == Approx((W - 1) * (t.comm - t.comp)));
    CHECK(st.idle_s == Approx(0.0).margin(1e-12));
  }
}

TEST_CASE("simulator::analytic: compute-bound ring forward is W t_comp with all communication hidden") {
  const int W = 4;
  Scenario sc = ring_scenario(W, 5000.0); // fast link
  Schedule s = generate_schedule(sc);
  StepTimes t = step_times(sc, s);
  REQUIRE(t.comp > t.comm);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  SimResult r = run_analytic(s, sc.workload, sc.cluster, k);
  CHECK(r.step_time_s == Approx(W * t.comp).epsilon(1e-9));
  CHECK(r.ranks[0].exposed_comm_s == Approx(0.0).margin(1e-12));
}

TEST_CASE("simulator::analytic: causal contiguous ring is lock-step: the last rank decides") {
  const int W = 4;
  Json j = test::scenario_json("ring", W, {int64_t(W) * 4096}, Json{{"kind", "causal"}}, "fwd", 8, 8, 128);
  Scenario sc = test::make_scenario(j);
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  SimResult r = run_analytic(s, sc.workload, sc.cluster, k);
  CHECK(r.ranks[W - 1].finish_s == Approx(r.step_time_s));
  CHECK(r.ranks[0].idle_s > 0.5 * r.step_time_s); // rank 0 computes one step of W
  CHECK(r.flops == Approx(4.0 * 8 * 128 * (W * 4096.0) * (W * 4096.0 + 1) / 2));
}

TEST_CASE("simulator::analytic: a plan that deadlocks is a named error") {
  Schedule t = test::deadlocked_two_rank_plan();
  Scenario sc = ring_scenario(2, 100.0);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, t.tile_m, t.tile_n);
  CHECK_THROWS_WITH(run_analytic(t, sc.workload, sc.cluster, k),
                    Catch::Contains("deadlocks") && Catch::Contains("rank 0") && Catch::Contains("4 ops never ran"));
}

TEST_CASE("simulator::analytic: trace has one track per rank and stream and one event per op") {
  Scenario sc = ring_scenario(2, 100.0);
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n);
  SimResult r = run_analytic(s, sc.workload, sc.cluster, k);
  Json t = chrome_trace(r, s);
  size_t x = 0, threads = 0;
  for (const auto& e : t["traceEvents"]) {
    x += e["ph"] == "X";
    threads += e["name"] == "thread_name";
  }
  CHECK(x == s.ranks[0].ops.size() + s.ranks[1].ops.size());
  CHECK(threads == 2 * s.streams.size());
  Json res = result_to_json(r, s);
  for (const char* key : {"step_time_s", "ranks", "flops", "bytes_sent"})
    CHECK(res.contains(key));
  for (const char* key : {"rank", "compute_s", "comm_s", "exposed_comm_s", "idle_s", "peak_memory_bytes"})
    CHECK(res["ranks"][0].contains(key));
}
