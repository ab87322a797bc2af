// Validation rows and summaries from measured results made by hand: every op measured at a chosen
// fraction of its prediction, so each relative error, median and p95 is known in advance.
#include "cpsim/calibrate/stats.hpp"
#include "cpsim/calibrate/validation.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/simulator/analytic_engine.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
struct Fixture {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 2, {512}, {{"kind", "causal"}}, "fwd", 4, 4, 64));
  Schedule s = generate_schedule(sc);
  RooflineKernelModel k{sc.cluster.gpu, sc.workload, s.tile_m, s.tile_n};
  SimResult pred = run_analytic(s, sc.workload, sc.cluster, k);

  /** attention measured at pred / 1.25 (+25 %), p2p at pred / 0.8 (-20 %), merges exact; step at 2 x pred (-50 %). */
  Json measured() const {
    std::map<std::pair<int, int>, double> d;
    for (const auto& r : pred.records)
      d[{r.rank, r.op}] = r.end_s - r.start_s;
    Json ops = Json::array();
    for (const auto& p : s.ranks)
      for (const auto& op : p.ops) {
        double t = d.at({p.rank, op.id});
        double m = op.kind == OpKind::ATTENTION ? t / 1.25 : (op.kind == OpKind::MERGE ? t : t / 0.8);
        ops.push_back({{"rank", p.rank}, {"op", op.id}, {"label", op.label}, {"median_s", m}});
      }
    return {{"step_time_s", 2 * pred.step_time_s}, {"ops", ops}};
  }
};

const ValidationRow& row(const ValidationReport& r, const std::string& level, const std::string& item) {
  for (const auto& x : r.rows)
    if (x.level == level && x.item == item)
      return x;
  FAIL("no row " + level + " / " + item);
  return r.rows.front();
}
} // namespace

TEST_CASE("calibrate::validation: per-step, per-kind and per-op errors computed by hand") {
  Fixture f;
  ValidationReport rep;
  add_scenario(rep, "ring2", f.s, f.pred, f.measured(), "m.json");
  CHECK(row(rep, "step", "step").rel_err == Approx(-0.5));
  CHECK(row(rep, "step", "step").measured_s == Approx(2 * f.pred.step_time_s));
  CHECK(row(rep, "kind", "attention fwd").rel_err == Approx(0.25));
  CHECK(row(rep, "kind", "p2p").rel_err == Approx(-0.2));
  int ops = 0;
  for (const auto& x : rep.rows)
    if (x.level == "op") {
      ++ops;
      CHECK(std::abs(x.rel_err) == Approx(x.item.rfind("attention", 0) == 0 ? 0.25
                                          : x.item.rfind("p2p", 0) == 0     ? 0.2
                                                                            : 0.0)
                                       .margin(1e-12));
    }
  CHECK(ops == int(f.s.ranks[0].ops.size() + f.s.ranks[1].ops.size()));

  auto sums = summarize(rep);
  REQUIRE(sums.front().level == "step");
  CHECK(sums.front().median_abs == Approx(0.5));
  CHECK(sums.front().p95_abs == Approx(0.5));
  for (const auto& s : sums)
    if (s.item == "attention fwd") {
      CHECK(s.median_abs == Approx(0.25));
      CHECK(s.p95_abs == Approx(0.25));
    }

  const std::string csv = validation_csv(rep);
  CHECK(csv.rfind("scenario,level,item,rank,op,predicted_s,measured_s,rel_err\n\"ring2\",step,\"step\",-1,-1,", 0) ==
        0);
  CHECK(csv.find(",-0.5\n") != std::string::npos);
  const std::string table = validation_table(rep);
  CHECK(table.find("-50.00%") != std::string::npos);
  CHECK(table.find("+25.00%") != std::string::npos);
  CHECK(table.find("-20.00%") != std::string::npos);
  CHECK(validation_json(rep)["summary"].front()["median_abs_rel_err"] == Approx(0.5));
}

TEST_CASE("calibrate::validation: a measured file from another plan is a named error") {
  Fixture f;
  ValidationReport rep;
  Json m = f.measured();
  m["ops"].erase(0);
  CHECK_THROWS_WITH(add_scenario(rep, "ring2", f.s, f.pred, m, "m.json"),
                    Catch::Contains("m.json") && Catch::Contains("was it measured from another plan"));
  m = f.measured();
  m["ops"][0]["label"] = "something else";
  CHECK_THROWS_WITH(add_scenario(rep, "ring2", f.s, f.pred, m, "m.json"),
                    Catch::Contains("something else") && Catch::Contains("in the plan"));
  m = f.measured();
  m["ops"][1]["median_s"] = 0;
  CHECK_THROWS_WITH(add_scenario(rep, "ring2", f.s, f.pred, m, "m.json"), Catch::Contains("must be > 0"));
  CHECK_THROWS_WITH(add_scenario(rep, "ring2", f.s, f.pred, Json::object(), "m.json"),
                    Catch::Contains("cpsim run --json"));
}

TEST_CASE("calibrate::stats: median and nearest-rank p95") {
  CHECK(median({3, 1, 2}) == 2);
  CHECK(median({4, 1, 2, 3}) == 2.5);
  std::vector<double> v;
  for (int i = 1; i <= 20; ++i)
    v.push_back(i);
  CHECK(percentile(v, 95) == 19);
  CHECK(percentile(v, 100) == 20);
  CHECK(percentile({5}, 95) == 5);
}
