// Small scenarios built in code for tests, so each test states exactly the sizes it checks.
#pragma once

#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/scenario.hpp"

#include <string>
#include <vector>

namespace cpsim::test {

inline Json scenario_json(const std::string& scheme, int cp, std::vector<int64_t> seq_lens, Json mask,
                          const std::string& pass = "fwd", int heads = 4, int kv_heads = 2, int head_dim = 64,
                          const std::string& hardware = "h100-sxm-8") {
  return Json{{"hardware", hardware},
              {"workload",
               {{"seq_lens", seq_lens}, {"heads", heads}, {"kv_heads", kv_heads}, {"head_dim", head_dim},
                {"dtype", "bf16"}, {"mask", mask}}},
              {"parallel", {{"scheme", scheme}, {"cp", cp}}},
              {"pass", pass}};
}

inline Scenario make_scenario(const Json& j) { return scenario_from_json(j, builtin_hardware, ""); }

inline std::vector<Json> all_masks() {
  return {Json{{"kind", "full"}}, Json{{"kind", "causal"}}, Json{{"kind", "sliding_window"}, {"window", 40}},
          Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.4}, {"seed", 7}},
          Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.5}, {"seed", 3}, {"causal", true}}};
}

} // namespace cpsim::test
