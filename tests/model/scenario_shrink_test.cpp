// Scenario shrinking (model/scenario_shrink.hpp): lengths, distributions, mask spans and DCP's block divided; what
// cannot be divided is refused by name.
#include "cpsim/model/errors.hpp"
#include "cpsim/model/scenario_shrink.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using Catch::Matchers::Contains;

TEST_CASE("model::scenario_shrink: lengths, distributions, spans and DCP blocks divided; the rest kept") {
  const Json sc{{"hardware", "h100-sxm-8"},
                {"workload", {{"seq_lens", {8192, 4096}}, {"heads", 8}, {"mask", {{"kind", "lambda"}, {"window", 2048}, {"sink", 100}}}}},
                {"parallel", {{"scheme", "dcp"}, {"cp", 4}, {"block", 1024}}}};
  const Json s = shrink_scenario_json(sc, 16);
  CHECK(s["workload"]["seq_lens"] == Json{512, 256});
  CHECK(s["workload"]["mask"]["window"] == 128);
  CHECK(s["workload"]["mask"]["sink"] == 6); // rounded down
  CHECK(s["parallel"]["block"] == 64);
  CHECK(s["parallel"]["cp"] == 4);
  CHECK(s["workload"]["heads"] == 8);
  CHECK(shrink_scenario_json(sc, 1) == sc);
  // a distribution: fewer tokens, each sequence shorter by the factor
  Json d = sc;
  d["workload"]["seq_lens"] = Json{{"distribution", "longalign"}, {"total_tokens", 131072}, {"seed", 1}};
  const Json ds = shrink_scenario_json(d, 32);
  CHECK(ds["workload"]["seq_lens"]["total_tokens"] == 4096);
  CHECK(ds["workload"]["seq_lens"]["scale"].get<double>() == Approx(1.0 / 32));
  CHECK(ds["workload"]["seq_lens"]["max_len"] == 131072 / 32);
  // block-sparse layout blocks and other schemes' "block"-like options stay
  Json b = sc;
  b["workload"]["mask"] = Json{{"kind", "block_sparse"}, {"block", 64}, {"density", 0.3}};
  b["parallel"] = Json{{"scheme", "pit"}, {"cp", 2}, {"granularity", 16}};
  const Json bs = shrink_scenario_json(b, 8);
  CHECK(bs["workload"]["mask"]["block"] == 64);
  CHECK(bs["parallel"]["granularity"] == 16);
}

TEST_CASE("model::scenario_shrink: refuses what it cannot divide, naming it") {
  const Json sc{{"workload", {{"seq_lens", {1000}}, {"mask", {{"kind", "causal"}}}}}};
  CHECK_THROWS_WITH(shrink_scenario_json(sc, 16), Contains("'workload.seq_lens[0]' = 1000") && Contains("16"));
  CHECK_THROWS_WITH(shrink_scenario_json(sc, 0), Contains("at least 1"));
  Json f = sc;
  f["workload"]["seq_lens"] = Json{1024};
  f["workload"]["mask"] = Json{{"kind", "block_sparse"}, {"block", 64}, {"layout_file", "x.json"}};
  CHECK_THROWS_WITH(shrink_scenario_json(f, 2), Contains("layout_file"));
}
