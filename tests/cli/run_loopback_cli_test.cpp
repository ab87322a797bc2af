// `cpsim run --loopback` without a GPU: its options are documented and checked (exit 2 naming the option),
// and the results of such runs, whose times are not the plan's, are refused where times are consumed.
#include "cpsim/model/json_reader.hpp"
#include "support/run_cpsim.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace cpsim;
using Catch::Contains;

namespace {
std::string tmp(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("cpsim_loopback_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}

std::string write_scenario() {
  const std::string path = tmp("ring2.json");
  std::ofstream(path) << R"({"name": "ring2", "hardware": "h100-sxm-8", "pass": "fwd",
    "workload": {"seq_lens": [2048], "heads": 4, "kv_heads": 4, "head_dim": 64, "dtype": "bf16", "mask": "causal"},
    "parallel": {"scheme": "ring", "cp": 2}})";
  return path;
}
} // namespace

TEST_CASE("cli: run --help documents --loopback and says its times are not the plan's") {
  test::Run r = test::run_cpsim("run --help");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("--loopback") && Contains("one GPU") && Contains("--loopback-device") && Contains("--loopback-sync"));
}

TEST_CASE("cli: --loopback options are refused by name when they make no sense, exit 2") {
  const std::string sc = write_scenario();
  test::Run dev = test::run_cpsim("run " + sc + " --loopback-device 0");
  CHECK(dev.code == 2);
  CHECK_THAT(dev.out, Contains("--loopback-device") && Contains("add --loopback"));
  test::Run sync = test::run_cpsim("run " + sc + " --loopback --loopback-sync spin");
  CHECK(sync.code == 2);
  CHECK_THAT(sync.out, Contains("--loopback-sync = \"spin\""));
}

TEST_CASE("cli: validate refuses a --loopback result as a measurement") {
  const std::string sc = write_scenario(), plan = tmp("ring2_plan.json"), meas = tmp("ring2_loopback.json");
  REQUIRE(test::run_cpsim("plan " + sc + " -o " + plan).code == 0);
  const Json pj = load_json_file(plan);
  save_json_file(meas, Json{{"scenario", pj["scenario"]}, {"step_time_s", 0.01}, {"ops", Json::array()},
                            {"loopback", {{"device", 0}, {"note", "time-shared"}}}}, 1);
  test::Run r = test::run_cpsim("validate " + sc + " --measured " + meas + " --out-dir " + tmp("out"));
  CHECK(r.code == 2);
  CHECK_THAT(r.out, Contains("--loopback") && Contains("not the plan's"));
}
