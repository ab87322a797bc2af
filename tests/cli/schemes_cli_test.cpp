// The CQS and DCP scenarios through the binary: `cpsim plan` (the dry run) reports the planning
// time on the console and in the plan, and simulating the plan gives the scenario's answer.
#include "cpsim/model/json_reader.hpp"
#include "support/run_cpsim.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

using namespace cpsim;
using Catch::Contains;

TEST_CASE("cli: cqs and dcp plans report their planning time and simulate like their scenarios") {
  const std::string scenarios = std::string(CPSIM_SOURCE_DIR) + "/scenarios/";
  const std::string d = (std::filesystem::temp_directory_path() / "cpsim_schemes_cli").string();
  std::filesystem::create_directories(d);
  for (const char* s : {"cqs_full_7xh100.json", "dcp_ldc_causal_2xdgx.json", "dcp_longalign_lambda_8xdgx.json"}) {
    INFO(s);
    test::Run p = test::run_cpsim("plan " + scenarios + s + " -o " + d + "/p.json");
    REQUIRE(p.code == 0);
    CHECK_THAT(p.out, Contains("planning took"));
    Json plan = load_json_file(d + "/p.json");
    CHECK(plan["planning_time_s"].get<double>() > 0.0);
    REQUIRE(test::run_cpsim("simulate " + d + "/p.json -q --json " + d + "/a.json").code == 0);
    REQUIRE(test::run_cpsim("simulate " + scenarios + s + " -q --json " + d + "/b.json").code == 0);
    CHECK(load_json_file(d + "/a.json")["step_time_s"] == load_json_file(d + "/b.json")["step_time_s"]);
  }
}

TEST_CASE("cli: compare ranks cqs and dcp (with DCP's block grid) where they apply") {
  const std::string scenarios = std::string(CPSIM_SOURCE_DIR) + "/scenarios/";
  test::Run r = test::run_cpsim("compare " + scenarios + "cqs_full_7xh100.json");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("  cqs ") && Contains("  dcp ") && Contains("block=4096"));
  // a forward-and-backward scenario: cqs is listed with its reason, dcp ranks
  test::Run d = test::run_cpsim("compare " + scenarios + "stripe_causal_8xh100.json");
  REQUIRE(d.code == 0);
  CHECK_THAT(d.out, Contains("cqs: 'pass' = \"fwd_bwd\"") && Contains("  dcp "));
}
