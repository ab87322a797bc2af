// `cpsim compare` end to end: every registered scheme and hybrid degree is tried, results are
// ranked with a consistent breakdown, inapplicable schemes carry their reason, OOM is marked.
#include "cpsim/model/json_reader.hpp"
#include "support/run_cpsim.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sys/wait.h>

using namespace cpsim;
using Catch::Contains;
using test::Run;

namespace {
std::string tmp(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("cpsim_compare_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}
} // namespace

TEST_CASE("cli: compare ranks every applicable scheme and degree choice and explains the rest") {
  std::string sc = tmp("sc.json"), out = tmp("cmp.json");
  std::ofstream(sc) << R"({"hardware": "h100-sxm-8",
    "workload": {"seq_lens": [16384], "heads": 16, "kv_heads": 2, "head_dim": 128, "dtype": "bf16", "mask": "causal"},
    "parallel": {"scheme": "usp", "cp": 8, "ulysses_degree": 2}, "pass": "fwd_bwd"})";
  Run r = test::run_cpsim("compare " + sc + " --json " + out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("step_ms") && Contains("zigzag") && Contains("loongtrain") && Contains("not applicable") &&
                        Contains("te_a2a") && Contains("kv_heads (2)"));
  Json j = load_json_file(out);
  const Json& res = j["results"];
  REQUIRE(res.size() > 10);
  std::map<std::string, int> seen;
  double prev = 0;
  for (const Json& e : res) {
    double step = e["step_time_s"].get<double>();
    CHECK(step >= prev);
    prev = step;
    CHECK(e["compute_s"].get<double>() + e["exposed_comm_s"].get<double>() + e["idle_s"].get<double>() ==
          Approx(step).epsilon(1e-9));
    seen[e["scheme"].get<std::string>()]++;
  }
  for (const Json& e : j["not_applicable"]) {
    CHECK(!e["reason"].get<std::string>().empty());
    seen[e["scheme"].get<std::string>()]++;
  }
  CHECK(seen["usp"] == 3 + 3 + 3 + 1);           // u = 1, 2, 4 x {basic, zigzag, stripe}; u = 8 alone
  CHECK(seen["loongtrain"] == 4 + 3 + 2 + 1);    // (d_hp, w) over the divisors of 8
  for (const char* s : {"ring", "zigzag", "ulysses", "stripe", "te_p2p", "te_allgather", "te_a2a"})
    CHECK(seen[s] == 1);
}

TEST_CASE("cli: compare marks schemes that do not fit in GPU memory") {
  std::string sc = tmp("big.json"), out = tmp("big_cmp.json");
  std::ofstream(sc) << R"({"hardware": "h100-sxm-2",
    "workload": {"seq_lens": [4194304], "heads": 64, "kv_heads": 64, "head_dim": 256, "dtype": "bf16", "mask": "full"},
    "parallel": {"scheme": "ring", "cp": 2}, "pass": "fwd"})";
  Run r = test::run_cpsim("compare " + sc + " --json " + out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains(" NO "));
  Json j = load_json_file(out);
  bool any_oom = false;
  for (const Json& e : j["results"])
    any_oom |= !e["fits_memory"].get<bool>();
  CHECK(any_oom);
}

TEST_CASE("cli: compare needs a scenario") {
  Run r = test::run_cpsim("compare /nonexistent.json");
  CHECK(r.code == 2);
}
