// `cpsim emulate`: a plan run on the CPU in fp64 against attention. A good plan exits 0 with every row "yes"; a plan
// whose scenario no longer matches its schedule exits 1 naming where; workloads too big for the fp64 reference and bad
// options exit 2. Where the build has no kernels' planner (no CUDA) the command says so with exit 2.
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
  auto d = std::filesystem::temp_directory_path() / ("cpsim_emulate_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}

std::string write(const std::string& name, const Json& j) {
  const std::string p = tmp(name);
  std::ofstream(p) << j.dump();
  return p;
}

const Json kUlysses{{"hardware", "h100-sxm-8"},
                    {"parallel", {{"cp", 4}, {"scheme", "ulysses"}}},
                    {"pass", "fwd_bwd"},
                    {"workload",
                     {{"dtype", "bf16"}, {"head_dim", 64}, {"heads", 4}, {"kv_heads", 2}, {"mask", {{"kind", "causal"}}},
                      {"seq_lens", {256}}}}};
} // namespace

TEST_CASE("cli: emulate runs a plan on the CPU and compares it with attention, or says it cannot") {
  const std::string sc = write("ulysses.json", kUlysses), out = tmp("emulated.json");
  test::Run r = test::run_cpsim("emulate " + sc + " --json " + out);
  if (!CPSIM_TEST_HAVE_EMULATOR) {
    CHECK(r.code == 2);
    CHECK_THAT(r.out, Contains("emulate") && Contains("CUDA"));
    return;
  }
  INFO(r.out);
  REQUIRE(r.code == 0); // Ulysses with replicated KV heads: their dK, dV summed (a bug the emulator found)
  CHECK_THAT(r.out, Contains("every result equals attention's"));
  const Json j = load_json_file(out);
  CHECK(j["ok"] == true);
  CHECK(j["results"].size() == 4 * 4); // o, dq, dk, dv on each of 4 ranks (Ulysses keeps its LSE head-sharded)
  // the plan of a causal scenario under a full mask: rank 0's queries miss keys the plan never brings
  const std::string plan = tmp("ring_plan.json");
  REQUIRE(test::run_cpsim("plan " + write("ring.json", Json{{"hardware", "h100-sxm-8"},
                                                             {"parallel", {{"cp", 2}, {"scheme", "ring"}}},
                                                             {"pass", "fwd"},
                                                             {"workload", kUlysses["workload"]}}) +
                          " -o " + plan)
              .code == 0);
  Json p = load_json_file(plan);
  p["scenario"]["workload"]["mask"] = Json{{"kind", "full"}};
  test::Run bad = test::run_cpsim("emulate " + write("ring_full.json", p));
  CHECK(bad.code == 1);
  CHECK_THAT(bad.out, Contains("MISMATCH") && Contains("NO, worst at sequence 0"));
  // refused before any work
  test::Run big = test::run_cpsim("emulate " + sc + " --max-cells 1000");
  CHECK(big.code == 2);
  CHECK_THAT(big.out, Contains("--max-cells 1000") && Contains("shorter sequences"));
  CHECK(test::run_cpsim("emulate " + sc + " --value-dims 0").code == 2);
  // a 16-rank shipped scenario (256k tokens, a 4k window) at 1/64 of its length: the same plan structure, exact
  test::Run small = test::run_cpsim("emulate " + std::string(CPSIM_SOURCE_DIR) + "/scenarios/ring_sliding_window_dgx.json --shrink 64 -q");
  CHECK(small.code == 0);
  test::Run plan_shrunk = test::run_cpsim("emulate " + plan + " --shrink 2");
  CHECK(plan_shrunk.code == 2);
  CHECK_THAT(plan_shrunk.out, Contains("is a plan"));
  CHECK(test::run_cpsim("emulate " + tmp("missing.json")).code == 2);
}
