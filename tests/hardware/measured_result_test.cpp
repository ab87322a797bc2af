// Aggregation of rank reports into the simulate-format result: median repetition, measured memory.
#include "cpsim/hardware/backend/measured_result.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using namespace cpsim::backend;

TEST_CASE("the median repetition is reported in the simulate format") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 2, {256}, Json{{"kind", "causal"}}, "fwd", 4, 2, 64));
  Schedule s = generate_schedule(sc);
  std::vector<Json> reports;
  for (int r = 0; r < 2; ++r) {
    Json reps = Json::array();
    for (double scale : {1.0, 3.0, 2.0}) {
      Json recs = Json::array();
      double t = 0;
      for (const auto& op : s.ranks[size_t(r)].ops) {
        recs.push_back({op.id, t, t + 1e-3 * scale});
        t += 1e-3 * scale;
      }
      reps.push_back(recs);
    }
    reports.push_back({{"reps", reps}, {"memory", {{"allocated_bytes", 1000 + r}}}, {"device", {{"name", "test"}}}});
  }
  Measured m = aggregate(s, sc.workload, reports);
  REQUIRE(m.step_times_s.size() == 3);
  CHECK(m.median.step_time_s == Approx(m.step_times_s[2]));
  CHECK(m.json.at("engine") == "gpu");
  CHECK(m.json.at("ranks").at(1).at("peak_memory_bytes") == 1001);
  CHECK(m.json.at("memory").at(0).contains("model_peak_bytes"));
  CHECK(m.json.at("ops").size() == s.ranks[0].ops.size() + s.ranks[1].ops.size());
  CHECK(median_of({3, 1, 2, 4}) == 2);
}

TEST_CASE("a failed --check on any rank fails the run, and the table names rank and tensor") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 2, {256}, Json{{"kind", "causal"}}, "fwd", 4, 2, 64));
  Schedule s = generate_schedule(sc);
  auto report = [&](int r, double rel, bool ok) {
    Json recs = Json::array();
    for (const auto& op : s.ranks[size_t(r)].ops)
      recs.push_back({op.id, 0.0, 1e-3});
    return Json{{"reps", Json::array({recs})}, {"memory", {{"allocated_bytes", 1}}}, {"device", {{"name", "test"}}},
                {"check", {{"o", {{"rel_l2", rel}, {"max_abs", 0.5}, {"ok", ok}}},
                           {"lse", {{"ok", false}, {"why", "no lse here"}}}}}};
  };
  Measured good = aggregate(s, sc.workload, {report(0, 1e-3, true), report(1, 2e-3, true)});
  CHECK_FALSE(good.json.at("check_ok").get<bool>()); // the lse entries say ok = false
  Json only_o = report(0, 1e-3, true);
  only_o["check"].erase("lse");
  Json bad_o = report(1, 0.3, false);
  bad_o["check"].erase("lse");
  Measured pass = aggregate(s, sc.workload, {only_o, only_o});
  CHECK(pass.check_ok);
  Measured fail = aggregate(s, sc.workload, {only_o, bad_o});
  CHECK_FALSE(fail.check_ok);
  const std::string t = check_table(fail.json.at("check"));
  CHECK(t.find("3.000e-01") != std::string::npos);
  CHECK(t.find("NO") != std::string::npos);
  CHECK(check_table(good.json.at("check")).find("no lse here") != std::string::npos);
}
