// Runs the real cpsim binary the way a user does and checks exit codes, messages and outputs.
#include "cpsim/model/json_reader.hpp"
#include "support/run_cpsim.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>

using namespace cpsim;
using Catch::Contains;
using test::Run;

namespace {
std::string tmpdir() {
  auto d = std::filesystem::temp_directory_path() / ("cpsim_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

std::string write(const std::string& name, const std::string& text) {
  std::string p = tmpdir() + "/" + name;
  std::ofstream(p) << text;
  return p;
}

const std::string kScenarios = std::string(CPSIM_SOURCE_DIR) + "/scenarios";
} // namespace

TEST_CASE("cli: default scenario simulates, writes JSON and a trace") {
  std::string d = tmpdir();
  Run r = test::run_cpsim("simulate " + kScenarios + "/default.json --json " + d + "/r.json --trace " + d + "/t.json");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("step time") && Contains("exposed_comm_ms"));
  Json res = load_json_file(d + "/r.json");
  CHECK(res["step_time_s"].get<double>() > 0);
  CHECK(res["ranks"].size() == 2);
  CHECK(res.contains("git_sha"));
  Json tr = load_json_file(d + "/t.json");
  CHECK(tr["traceEvents"].size() > 10);
}

TEST_CASE("cli: --engine des prints the same table and writes the same JSON and trace forms") {
  std::string d = tmpdir();
  const std::string in = kScenarios + "/ring_causal_4xh100.json";
  Run a = test::run_cpsim("simulate " + in + " --json " + d + "/a.json --trace " + d + "/at.json");
  Run r = test::run_cpsim("simulate " + in + " --engine des --json " + d + "/d.json --trace " + d + "/dt.json");
  REQUIRE(a.code == 0);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("step time") && Contains("exposed_comm_ms") && Contains("(engine: des)") &&
                        Contains("des: 1 replica(s)"));
  Json ja = load_json_file(d + "/a.json"), jd = load_json_file(d + "/d.json");
  CHECK(jd["engine"] == "des");
  CHECK(jd["ranks"].size() == ja["ranks"].size());
  CHECK(jd["des"]["simulated_replicas"] == 1);
  for (const auto& [key, value] : ja.items()) // every analytic field is there
    CHECK(jd.contains(key));
  CHECK(load_json_file(d + "/dt.json")["traceEvents"].size() == load_json_file(d + "/at.json")["traceEvents"].size());
}

TEST_CASE("cli: plan then simulate the plan gives the same answer as the scenario") {
  std::string d = tmpdir();
  for (const char* s : {"default.json", "ring_causal_4xh100.json", "ulysses_full_8xh100.json"}) {
    REQUIRE(test::run_cpsim("plan " + kScenarios + "/" + s + " -o " + d + "/p.json").code == 0);
    REQUIRE(test::run_cpsim("simulate " + d + "/p.json -q --json " + d + "/a.json").code == 0);
    REQUIRE(test::run_cpsim("simulate " + kScenarios + "/" + s + " -q --json " + d + "/b.json").code == 0);
    CHECK(load_json_file(d + "/a.json")["step_time_s"] == load_json_file(d + "/b.json")["step_time_s"]);
  }
}

TEST_CASE("cli: bad inputs exit 2 with a message naming the cause") {
  struct Case {
    std::string args;
    std::string expect;
  };
  std::string malformed = write("bad.json", "{\"hardware\": \"h100-sxm-2\",");
  std::string unknown = write("unknown.json", R"({"hardware":"h100-sxm-2","workload":{"seq_lens":[1024],"heads":8,"kv_heads":8,
    "head_dim":128,"dtype":"bf16","mask":"causal"},"parallel":{"scheme":"ring","cp":2},"pass":"fwd","colour":1})");
  std::string oom = write("oom.json", R"({"hardware":"h100-sxm-2","workload":{"seq_lens":[4194304],"heads":64,"kv_heads":64,
    "head_dim":128,"dtype":"bf16","mask":"causal"},"parallel":{"scheme":"zigzag","cp":2},"pass":"fwd_bwd"})");
  std::string bad_plan = write("plan.json", R"({"format":"cpsim-plan","version":1,"source":{},"scenario":{},"schedule":{}})");
  auto hw = [](const std::string& inter) {
    return R"({"hardware":{"gpu":{"name":"g","peak_tflops":989,"hbm_GBps":3350,"memory_gib":80,"sm_count":132},
      "gpus_per_node":8,"nodes":2,"intra_node":{"bandwidth_GBps":300,"latency_us":2},"inter_node":)" + inter +
           R"(},"workload":{"seq_lens":[4096],"heads":8,"kv_heads":8,"head_dim":128,"dtype":"bf16","mask":"causal"},
      "parallel":{"scheme":"ring","cp":16},"pass":"fwd"})";
  };
  std::string torus = write("torus.json", hw(R"({"bandwidth_GBps":50,"latency_us":5,"nics_per_node":8,"topology":"torus"})"));
  std::string nics = write("nics.json", hw(R"({"bandwidth_GBps":50,"latency_us":5,"nics_per_node":3})"));
  std::vector<Case> cases = {
      {"simulate " + torus + " --engine des", "'hardware.inter_node.topology'"},
      {"simulate " + nics + " --engine des", "hardware.inter_node.nics_per_node = 3"},
      {"simulate /nonexistent/x.json", "cannot open '/nonexistent/x.json'"},
      {"simulate " + malformed, "is not valid JSON"},
      {"simulate " + unknown, "'colour' is not a known key"},
      {"simulate " + oom, "does not fit in GPU memory"},
      {"simulate " + bad_plan, "'hardware' is missing"},
      {"simulate " + kScenarios + "/default.json --engine warp", "unknown engine"},
      {"simulate " + kScenarios + "/default.json --engine warp", "known: analytic, des"},
      {"plan " + kScenarios + "/default.json -o /nonexistent/dir/p.json", "cannot write"},
      {"simulate", "input is required"},
      {"frobnicate", "subcommand"},
  };
  for (const auto& c : cases) {
    Run r = test::run_cpsim(c.args);
    INFO(c.args << "\n" << r.out);
    CHECK(r.code == 2);
    CHECK_THAT(r.out, Contains(c.expect));
  }
  CHECK(test::run_cpsim("simulate " + oom + " -q --allow-oom").code == 0);
}

TEST_CASE("cli: --help describes every subcommand") {
  Run r = test::run_cpsim("--help");
  CHECK(r.code == 0);
  for (const char* s : {"plan", "simulate", "schemes", "hardware"})
    CHECK_THAT(r.out, Contains(s));
  Run s = test::run_cpsim("simulate --help");
  CHECK_THAT(s.out, Contains("--json") && Contains("--trace") && Contains("--engine"));
}
