// Exec plans run by the CPU emulator (hardware/src/backend/plan_emulator.hpp) against attention in fp64: every scheme
// the backend executes, dense and sparse, forward and backward, 1 to 4 ranks. What a GPU's `cpsim run --check` would
// see of the plan's data movement and arithmetic, without a GPU.
#include "../../hardware/src/backend/plan_emulator.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/scenario_shrink.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace cpsim;
using namespace cpsim::backend;

namespace {

/** Emulates the scenario's plan; every result of every rank must equal the reference to fp64 rounding. */
void check_emulated(const Scenario& sc, const std::string& what) {
  INFO(what);
  const Schedule s = generate_schedule(sc);
  const ExecPlan plan = make_exec_plan(s, sc.workload);
  const std::vector<EmulatedResult> res = emulate_plan(s, sc, plan);
  std::set<std::string> seen;
  for (const EmulatedResult& r : res) {
    INFO("rank " << r.rank << " " << r.result << " ('" << r.buffer << "'): max |err| " << r.max_abs_err << " of max |ref| "
                 << r.max_abs_ref << " over " << r.elements << " elements, worst at " << r.worst);
    CHECK(r.elements > 0);
    CHECK(r.max_abs_err <= 1e-9 * std::max(1.0, r.max_abs_ref));
    seen.insert(r.result);
  }
  CHECK(seen.count("o") == 1);
  if (s.pass == PassKind::FWD_BWD)
    CHECK((seen.count("dq") == 1 && (seen.count("dkv") == 1 || (seen.count("dk") == 1 && seen.count("dv") == 1))));
}

} // namespace

TEST_CASE("plan emulator: the dense schemes' plans compute attention and its gradients exactly, 2, 4 and 8 ranks") {
  struct Case {
    const char* scheme;
    int cp;
    Json extra;
  };
  const std::vector<Case> cases = {
      {"ring", 2, {}},    {"ring", 4, {}},         {"zigzag", 2, {}},  {"zigzag", 4, {}},
      {"stripe", 4, {}},  {"ulysses", 2, {}},      {"ulysses", 4, {}}, {"te_a2a", 4, {}},
      {"te_allgather", 2, {}}, {"te_allgather", 4, {}}, {"te_p2p", 2, {}}, {"te_p2p", 4, {}},
      {"usp", 4, {{"ulysses_degree", 2}, {"ring_degree", 2}}},
      {"loongtrain", 4, {{"head_degree", 2}, {"context_degree", 2}}},
      {"ring", 8, {}},    {"zigzag", 8, {}},       {"te_p2p", 8, {}},
      {"usp", 8, {{"ulysses_degree", 2}, {"ring_degree", 4}}},
      {"loongtrain", 8, {{"head_degree", 2}, {"context_degree", 4}}},
      // head degrees above the 2 KV heads: replicated heads whose dK, dV the reverse all-to-all sums
      {"usp", 8, {{"ulysses_degree", 4}, {"ring_degree", 2}}},
      {"loongtrain", 8, {{"head_degree", 4}, {"context_degree", 2}}}};
  for (const Case& c : cases)
    for (const char* mask : {"causal", "full"})
      for (const char* pass : {"fwd", "fwd_bwd"}) {
        if ((std::string(c.scheme) == "stripe" || std::string(c.scheme) == "loongtrain") && std::string(mask) == "full")
          continue; // causal only, as their sources assert
        const bool te_a2a = std::string(c.scheme) == "te_a2a"; // TE needs the KV heads divisible by cp
        Json j = test::scenario_json(c.scheme, c.cp, {256}, Json{{"kind", mask}}, pass, te_a2a ? 8 : 4, te_a2a ? 4 : 2, 64);
        for (const auto& [k, v] : c.extra.items())
          j["parallel"][k] = v;
        check_emulated(test::make_scenario(j), j.dump());
      }
}

TEST_CASE("plan emulator: the sparse --check scenarios, shrunk 16-fold, compute attention and its gradients exactly") {
  // scenarios/sparse_checks/ (PIT both axes, DSV, TE p2p, CQS, DCP under every mask) with sequences, DCP blocks and
  // mask spans divided by 16 and 32 heads cut to 8, so that the fp64 reference stays small
  std::ifstream list(std::string(CPSIM_SOURCE_DIR) + "/scenarios/sparse_checks/list.txt");
  REQUIRE(list.good());
  std::string line;
  int emulated = 0;
  while (std::getline(list, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream in(line);
    int ranks = 0;
    std::string file;
    in >> ranks >> file;
    Json j = load_json_file(std::string(CPSIM_SOURCE_DIR) + "/" + file);
    Json& w = j["workload"];
    for (auto& n : w["seq_lens"])
      n = n.get<int64_t>() / 16;
    if (j["parallel"].contains("block"))
      j["parallel"]["block"] = j["parallel"]["block"].get<int64_t>() / 16;
    if (w["mask"].is_object()) {
      for (const char* k : {"window", "sink"})
        if (w["mask"].contains(k))
          w["mask"][k] = w["mask"][k].get<int64_t>() / 16;
      if (w["mask"].value("kind", "") == "causal_blockwise")
        w["mask"]["block"] = w["mask"]["block"].get<int64_t>() / 16;
    }
    if (w["heads"] == 32) {
      w["heads"] = 8;
      w["kv_heads"] = w["kv_heads"].get<int>() / 4;
      if (j["parallel"].contains("head_block"))
        j["parallel"]["head_block"] = j["parallel"]["head_block"].get<int>() / 4;
    }
    const Scenario sc = scenario_from_json(j, builtin_hardware, std::string(CPSIM_SOURCE_DIR) + "/scenarios/sparse_checks");
    REQUIRE(sc.parallel.cp == ranks);
    check_emulated(sc, file + " shrunk: " + j.dump());
    ++emulated;
  }
  CHECK(emulated >= 20);
}

TEST_CASE("plan emulator: every shipped scenario the backend executes, shrunk to at most 512 tokens, is exact") {
  // scenarios/*.json (up to 64 ranks: DCP's, LoongTrain's 32, USP's 16, CQS's 13, ...) divided by the smallest power
  // of two that brings them to 512 tokens or fewer (model/scenario_shrink.hpp)
  int emulated = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(CPSIM_SOURCE_DIR) + "/scenarios")) {
    if (!e.is_regular_file() || e.path().extension() != ".json")
      continue;
    const Json full = load_json_file(e.path().string());
    int64_t factor = 1;
    for (;; factor *= 2) {
      const Scenario probe = scenario_from_json(shrink_scenario_json(full, factor), builtin_hardware, e.path().parent_path().string());
      if (probe.workload.total_tokens() <= 512)
        break;
    }
    const Scenario sc = scenario_from_json(shrink_scenario_json(full, factor), builtin_hardware, e.path().parent_path().string());
    check_emulated(sc, e.path().filename().string() + " / " + std::to_string(factor));
    ++emulated;
  }
  CHECK(emulated >= 15);
}
