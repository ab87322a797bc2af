// The DSV and PIT scenarios of scenarios/ end to end: they simulate on both engines, their plans
// simulate to the same answer, and `cpsim compare` on a sparse workload tries every DSV degree pair (naive and
// sparsity-aware) and every PIT granularity.
#include "cpsim/model/json_reader.hpp"
#include "support/run_cpsim.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <unistd.h>

using namespace cpsim;
using Catch::Contains;
using test::Run;

namespace {
const std::string kScenarios = std::string(CPSIM_SOURCE_DIR) + "/scenarios";

std::string tmp(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("cpsim_sparse_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}
} // namespace

TEST_CASE("cli: the dsv and pit scenarios simulate, and their plans give the same answer") {
  for (const char* s : {"dsv_video_sparse_4xh100.json", "pit_scattered_columns_2xh100.json"}) {
    INFO(s);
    const std::string plan = tmp("p.json"), a = tmp("a.json"), b = tmp("b.json");
    REQUIRE(test::run_cpsim("plan " + kScenarios + "/" + s + " -o " + plan).code == 0);
    REQUIRE(test::run_cpsim("simulate " + plan + " -q --json " + a).code == 0);
    Run r = test::run_cpsim("simulate " + kScenarios + "/" + s + " --json " + b);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.out, Contains("step time"));
    Json res = load_json_file(b);
    CHECK(res["step_time_s"].get<double>() > 0);
    // equal up to rounding: the plan stores the hardware's latencies in microseconds, and
    // 15 us x 1e-6 x 1e6 x 1e-6 is not always 15e-6 to the last bit
    CHECK(load_json_file(a)["step_time_s"].get<double>() == Approx(res["step_time_s"].get<double>()).epsilon(1e-12));
    // the discrete-event engine runs the compute ops too; one flow per rank and step (pairwise
    // exchanges, ring collectives) meets no contention here, so both engines agree
    const std::string d = tmp("d.json");
    REQUIRE(test::run_cpsim("simulate " + kScenarios + "/" + s + " -q --engine des --json " + d).code == 0);
    CHECK(load_json_file(d)["step_time_s"].get<double>() == Approx(res["step_time_s"].get<double>()).epsilon(0.01));
  }
}

TEST_CASE("cli: compare on a sparse workload tries every dsv degree pair and every pit granularity and axis") {
  const std::string out = tmp("cmp.json");
  Run r = test::run_cpsim("compare " + kScenarios + "/dsv_video_sparse_4xh100.json --json " + out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("dsv") && Contains("pit") && Contains("sparsity_aware=false"));
  Json j = load_json_file(out);
  std::map<std::string, int> ranked;
  for (const Json& e : j["results"])
    ranked[e["scheme"].get<std::string>()]++;
  CHECK(ranked["dsv"] == 3 * 2); // (hcp, scp) in (1,4) (2,2) (4,1), naive and aware
  CHECK(ranked["pit"] == 3 * 2); // granularities 16, 64, 128 along key columns and query rows
}
