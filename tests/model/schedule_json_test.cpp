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

TEST_CASE("model::schedule_json: dtypes, head lists, compute parameters and message regions survive a round trip") {
  Scenario sc = test::make_scenario(test::scenario_json("pit", 2, {256},
                                                        Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}},
                                                        "fwd_bwd"));
  sc.parallel.options["granularity"] = 16;
  Schedule s = generate_schedule(sc);
  // a region send of rank 0's second K/V plane rows and one head, received whole by rank 1
  Buffer& kv0 = s.ranks[0].buffers[1];
  REQUIRE(kv0.tensor == "kv");
  Op send;
  send.id = int(s.ranks[0].ops.size());
  send.kind = OpKind::SEND;
  send.peer = 1;
  send.tag = 77;
  send.reads = {kv0.name};
  send.regions = {{kv0.name, {{0, {0, 64}}}, {1}, 1, 2}};
  send.bytes = region_bytes(kv0, send.regions[0]);
  s.ranks[0].ops.push_back(send);
  Buffer in{"in", "k", send.bytes, 0, 1, {{0, {0, 64}}}, -1, -1, {}, {}};
  s.ranks[1].buffers.push_back(in);
  Op recv = send;
  recv.id = int(s.ranks[1].ops.size());
  recv.kind = OpKind::RECV;
  recv.peer = 0;
  recv.reads.clear();
  recv.writes = {"in"};
  recv.regions = {{"in", {}, {}, 0, -1}};
  s.ranks[1].ops.push_back(recv);
  validate_schedule(s);
  Json j = schedule_to_json(s);
  Schedule back = schedule_from_json(Json::parse(j.dump()), "schedule");
  CHECK(schedule_to_json(back) == j);
  CHECK(back.ranks[0].ops.back().regions == s.ranks[0].ops.back().regions);
  bool gather = false, typed = false;
  for (const Op& op : back.ranks[0].ops)
    gather |= op.kind == OpKind::COMPUTE && op.compute == ComputeKind::GATHER && op.granularity == 16;
  for (const Buffer& b : back.ranks[0].buffers)
    typed |= b.name == "mt_index" && b.dtype == "int32";
  CHECK(gather);
  CHECK(typed);
  // a region whose bytes disagree with the op, or that names tokens the buffer lacks, is refused by name
  Json bad = j;
  bad["ranks"][0]["ops"].back()["regions"][0]["tokens"] = Json::array({Json::array({0, 64, 192})});
  CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("rank 0") && Contains("does not hold"));
  bad = j;
  bad["ranks"][0]["ops"].back()["regions"][0]["heads"] = {0, 1};
  CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("regions hold") && Contains("not the op's"));
}
