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
