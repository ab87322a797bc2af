// Scenario validation: every kind of bad input is a UserError naming the key, value and reason.
#include "cpsim/model/scenario.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using Catch::Contains;

namespace {
Json good() { return test::scenario_json("zigzag", 2, {4096}, Json{{"kind", "causal"}}); }
} // namespace

TEST_CASE("model::scenario: a good scenario parses, with built-in or inline hardware") {
  Scenario s = test::make_scenario(good());
  CHECK(s.cluster.world_size() == 8);
  CHECK(s.cluster.gpu.peak_flops == Approx(989e12));
  Json inline_hw = good();
  inline_hw["hardware"] = scenario_to_json(s)["hardware"];
  Scenario t = test::make_scenario(inline_hw);
  CHECK(t.cluster.intra_node.bandwidth_bytes_per_s == s.cluster.intra_node.bandwidth_bytes_per_s);
  CHECK(test::make_scenario(scenario_to_json(s)).workload.seq_lens == s.workload.seq_lens);
}

TEST_CASE("model::scenario: multi-node built-ins take a node count") {
  Json j = good();
  j["hardware"] = "dgx-h100:16";
  Scenario s = test::make_scenario(j);
  CHECK(s.cluster.world_size() == 128);
  CHECK(s.cluster.inter_node_bytes_per_s_per_gpu() == Approx(50e9));
  j["hardware"] = "dgx-h100:zero";
  CHECK_THROWS_WITH(test::make_scenario(j), Contains("node count"));
}

TEST_CASE("model::scenario: bad inputs are named") {
  struct Case {
    std::function<void(Json&)> edit;
    std::vector<std::string> expect;
  };
  std::vector<Case> cases = {
      {[](Json& j) { j["extra"] = 1; }, {"'extra'", "not a known key"}},
      {[](Json& j) { j["workload"]["head"] = 1; }, {"workload.head", "not a known key"}},
      {[](Json& j) { j["workload"]["heads"] = "four"; }, {"workload.heads", "integer"}},
      {[](Json& j) { j["workload"]["heads"] = 0; }, {"workload.heads", "at least 1"}},
      {[](Json& j) { j["workload"]["heads"] = 2.5; }, {"workload.heads", "integer"}},
      {[](Json& j) { j["workload"]["kv_heads"] = 3; }, {"workload.kv_heads", "divide heads"}},
      {[](Json& j) { j["workload"]["seq_lens"] = Json::array(); }, {"workload.seq_lens", "non-empty"}},
      {[](Json& j) { j["workload"]["seq_lens"] = {128, -4}; }, {"workload.seq_lens[1]", "-4"}},
      {[](Json& j) { j["workload"]["dtype"] = "fp8"; }, {"workload.dtype", "bf16, fp16"}},
      {[](Json& j) { j["workload"]["mask"] = {{"kind", "sliding_window"}}; }, {"workload.mask.window", "missing"}},
      {[](Json& j) { j["workload"]["mask"] = {{"kind", "block_sparse"}, {"block", 128}}; }, {"exactly one of"}},
      {[](Json& j) { j["workload"]["mask"] = {{"kind", "block_sparse"}, {"block", 128}, {"density", 1.5}, {"seed", 1}}; },
       {"workload.mask.density", "at most 1"}},
      {[](Json& j) { j["workload"]["mask"] = {{"kind", "block_sparse"}, {"block", 128}, {"layout_file", "/nonexistent/l.json"}}; },
       {"workload.mask.layout_file", "does not exist"}},
      {[](Json& j) { j["workload"]["mask"] = "diagonal"; }, {"workload.mask.kind", "full, causal"}},
      {[](Json& j) { j["parallel"]["cp"] = 16; }, {"parallel.cp", "exceeds the 8 GPUs"}},
      {[](Json& j) { j["parallel"]["cp"] = 0; }, {"parallel.cp", "at least 1"}},
      {[](Json& j) { j["parallel"]["dp"] = 8; }, {"parallel.dp", "exceeds"}},
      {[](Json& j) { j["parallel"].erase("scheme"); }, {"parallel.scheme", "missing"}},
      {[](Json& j) { j["pass"] = "bwd"; }, {"pass", "fwd, fwd_bwd"}},
      {[](Json& j) { j["hardware"] = "tpu-v5"; }, {"tpu-v5", "known: "}},
      {[](Json& j) { j["hardware"] = 3; }, {"hardware", "name of a built-in"}},
      {[](Json& j) { j["hardware"] = {{"gpu", {{"name", "x"}}}}; }, {"hardware.gpu.peak_tflops", "missing"}},
      {[](Json& j) { j.erase("workload"); }, {"'workload' is missing"}},
  };
  for (auto& c : cases) {
    Json j = good();
    c.edit(j);
    INFO(j.dump());
    try {
      test::make_scenario(j);
      FAIL("accepted a bad scenario");
    } catch (const UserError& e) {
      for (const auto& s : c.expect)
        CHECK_THAT(e.what(), Contains(s));
    }
  }
}
