// The IR survives a JSON round trip unchanged, and broken plans are rejected with the reason.
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/model/schedule_json.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using Catch::Contains;

TEST_CASE("model::schedule_json: round trip keeps every field") {
  for (const std::string scheme : {"ring", "zigzag", "ulysses"}) {
    Scenario sc = test::make_scenario(test::scenario_json(scheme, 4, {128},
                                                          Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}},
                                                          "fwd_bwd"));
    Schedule s = generate_schedule(sc);
    Json j = schedule_to_json(s);
    Schedule back = schedule_from_json(Json::parse(j.dump()), "schedule");
    CHECK(schedule_to_json(back) == j);
    REQUIRE(back.ranks.size() == s.ranks.size());
    CHECK(back.ranks[1].ops.size() == s.ranks[1].ops.size());
    CHECK(back.ranks[1].ops[3].segments == s.ranks[1].ops[3].segments);
  }
}

TEST_CASE("model::schedule_json: structural errors in a plan are named") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 2, {64}, "causal"));
  Json j = schedule_to_json(generate_schedule(sc));
  {
    Json bad = j;
    bad["ranks"][0]["ops"][0]["deps"] = {5};
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("rank 0") && Contains("earlier op"));
  }
  {
    Json bad = j;
    for (auto& op : bad["ranks"][1]["ops"])
      if (op["kind"] == "recv")
        op["bytes"] = 1;
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("disagree on bytes"));
  }
  {
    Json bad = j;
    bad["ranks"][0]["ops"][0]["colour"] = "red";
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("colour"));
  }
  {
    Json bad = j;
    bad["ranks"][0]["ops"][0]["stream"] = 9;
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("stream"));
  }
  {
    Json bad = j;
    bad["placement"] = {0, 0};
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("GPU 0"));
  }
  {
    Json bad = j;
    bad["ranks"][0]["ops"][0]["reads"] = {"nope"};
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("undeclared buffer 'nope'"));
  }
  {
    // a buffer freed before its last reader: arena reuse would hand its memory to another buffer meanwhile
    Json bad = j;
    Json* victim = nullptr;
    for (auto& b : bad["ranks"][0]["buffers"])
      if (b["free_op"].get<int>() > b["alloc_op"].get<int>() && b["alloc_op"].get<int>() >= 0)
        victim = &b;
    REQUIRE(victim != nullptr);
    const std::string name = (*victim)["name"];
    (*victim)["free_op"] = (*victim)["alloc_op"];
    CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("uses buffer '" + name + "' outside its lifetime"));
  }
}

TEST_CASE("model::schedule_json: compute ops, head lists and per-head counts survive a round trip") {
  const Json mask{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.9, 0.1, 0.1, 0.8}}, {"seed", 4}};
  for (const std::string scheme : {"dsv", "pit"}) {
    Json j0 = test::scenario_json(scheme, 2, {128}, mask, "fwd_bwd", 4, 4);
    j0["parallel"][scheme == "dsv" ? "hcp" : "granularity"] = scheme == "dsv" ? 2 : 32;
    Schedule s = generate_schedule(test::make_scenario(j0));
    Json j = schedule_to_json(s);
    Schedule back = schedule_from_json(Json::parse(j.dump()), "schedule");
    CHECK(schedule_to_json(back) == j);
    bool compute = false, summed = false;
    for (const auto& op : back.ranks[0].ops) {
      compute |= op.kind == OpKind::COMPUTE && op.bytes > 0;
      summed |= op.kind == OpKind::ATTENTION && op.head_summed;
    }
    CHECK(compute);
    CHECK(summed);
  }
  Json one = test::scenario_json("pit", 1, {64}, mask, "fwd", 4, 4);
  one["parallel"]["granularity"] = 16;
  Json bad = schedule_to_json(generate_schedule(test::make_scenario(one)));
  for (auto& op : bad["ranks"][0]["ops"])
    if (op["kind"] == "compute")
      op["compute"] = "sort";
  CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("compute") && Contains("sort"));
}
