// USP (schedules.md 4.2): exactly-once coverage for every (u, r) and ring variant, the byte and
// FLOP closed forms, the group structure (Ulysses contiguous, ring strided), equivalence with the
// plain ring schemes at u = 1, and the named errors of bad degrees.
#include "schedules_test_support.hpp"

using namespace cpsim;
using Catch::Contains;

namespace {
Json usp(int u, int r, const std::string& variant) {
  return Json{{"ulysses_degree", u}, {"ring_degree", r}, {"ring_variant", variant}};
}
} // namespace

TEST_CASE("model::schedules: usp computes every visible cell exactly once for every (u, r) and variant") {
  for (auto [u, r] : {std::pair{1, 4}, std::pair{2, 2}, std::pair{4, 1}})
    for (const std::string variant : {"basic", "zigzag", "stripe"})
      for (const Json& mask : test::all_masks()) {
        if (variant == "stripe" && mask != Json{{"kind", "causal"}})
          continue;
        Scenario sc = test::scenario_with("usp", 4, {64, 128}, mask, "fwd_bwd", usp(u, r, variant));
        INFO("u " << u << " r " << r << " " << variant << " mask " << mask.dump());
        test::check_exactly_once(generate_schedule(sc), sc);
      }
}

TEST_CASE("model::schedules: usp bytes and FLOPs per rank match schedules.md 4.2") {
  const int W = 8, u = 2, nr = 4, H = 8, G = 4, D = 64, e = 2;
  const int64_t S = 1024, c = S / W, L = S / nr;
  const int64_t B_Q = c * H * D * e, B_KV = 2 * c * G * D * e;
  Scenario sc = test::scenario_with("usp", W, {S}, Json{{"kind", "causal"}}, "fwd_bwd", usp(u, nr, "zigzag"), H, G, D);
  Schedule s = generate_schedule(sc);
  for (int r = 0; r < W; ++r) {
    INFO("rank " << r);
    CHECK(test::sent_by(s, r, "fwd a2a") == (u - 1) * (B_Q + B_KV + B_Q) / u);
    CHECK(test::sent_by(s, r, "bwd a2a") == (u - 1) * (B_Q + B_Q + B_KV) / u);
    // the ring step moves 2 (S/r)(G/u) D e bytes, the same as B_KV of a pure W-ring
    CHECK(test::sent_by(s, r, "fwd kv") == (nr - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd kv") == (nr - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd dkv") == nr * B_KV * 4 / e);
    double cells = double(nr * L * L / 2 + L / 2); // zigzag over r ranks, per head
    CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * (H / u) * D));
    CHECK(test::count_ops(s, r, OpKind::ATTENTION, "fwd attn") == nr);
    for (const auto& op : s.ranks[size_t(r)].ops) {
      if (op.kind == OpKind::COLLECTIVE) // Ulysses groups are contiguous
        CHECK(op.coll_group == std::vector<int>{r / u * u, r / u * u + 1});
      if (op.kind == OpKind::SEND && op.label.rfind("fwd kv", 0) == 0) // ring groups are strided by u
        CHECK(op.peer == (r + u) % W);
    }
  }
}

TEST_CASE("model::schedules: usp with u = 1 is the plain ring, zigzag or stripe program") {
  using Pair = std::pair<std::string, std::string>;
  for (auto [variant, scheme] : {Pair{"basic", "ring"}, Pair{"zigzag", "zigzag"}, Pair{"stripe", "stripe"}}) {
    Schedule a = generate_schedule(test::scenario_with("usp", 4, {128}, "causal", "fwd_bwd", usp(1, 4, variant)));
    Schedule b = generate_schedule(test::scenario_with(scheme, 4, {128}, "causal", "fwd_bwd", Json::object()));
    INFO(variant);
    for (int r = 0; r < 4; ++r) {
      const auto &x = a.ranks[size_t(r)].ops, &y = b.ranks[size_t(r)].ops;
      REQUIRE(x.size() == y.size());
      for (size_t i = 0; i < x.size(); ++i) {
        CHECK(x[i].kind == y[i].kind);
        CHECK(x[i].label == y[i].label);
        CHECK(x[i].deps == y[i].deps);
        CHECK(x[i].segments == y[i].segments);
        CHECK(x[i].bytes == y[i].bytes);
        CHECK(x[i].peer == y[i].peer);
        CHECK(a.streams[size_t(x[i].stream)].name == b.streams[size_t(y[i].stream)].name);
      }
    }
  }
}

TEST_CASE("model::schedules: usp replicates KV heads when u exceeds them") {
  const int W = 4, H = 8, G = 2, D = 64, e = 2;
  const int64_t S = 256, c = S / W;
  Scenario sc = test::scenario_with("usp", W, {S}, "causal", "fwd", usp(4, 1, "basic"), H, G, D);
  Schedule s = generate_schedule(sc);
  test::check_exactly_once(s, sc);
  CHECK(test::sent_by(s, 0, "fwd a2a k") == 3 * (c * 4 * D * e) / 4); // 4 KV heads after replication
}

TEST_CASE("model::schedules: usp names the key, value and reason of a bad configuration") {
  auto gen = [](int cp, const Json& opts, int H = 8, int G = 4, const Json& mask = "causal") {
    return generate_schedule(test::scenario_with("usp", cp, {256}, mask, "fwd", opts, H, G));
  };
  CHECK_THROWS_WITH(gen(8, Json{{"ulysses_degree", 3}}), Contains("'parallel.ulysses_degree' = 3: must divide cp (8)"));
  CHECK_THROWS_WITH(gen(8, Json{{"ulysses_degree", 2}, {"ring_degree", 2}}),
                    Contains("'parallel.ring_degree' = 2") && Contains("must equal cp (8)"));
  CHECK_THROWS_WITH(gen(8, Json{{"ulysses_degree", 8}}, 4, 4), Contains("'parallel.ulysses_degree' = 8") && Contains("heads"));
  CHECK_THROWS_WITH(gen(8, Json{{"ring_degree", 2}, {"ring_variant", "spiral"}}), Contains("'parallel.ring_variant'"));
  CHECK_THROWS_WITH(gen(8, Json{{"ring_degree", 2}, {"ring_variant", "stripe"}}, 8, 4, Json{{"kind", "full"}}),
                    Contains("workload.mask.kind"));
  CHECK_THROWS_WITH(gen(8, Json::object()), Contains("'parallel.ulysses_degree'") && Contains("ring_degree"));
  CHECK_THROWS_WITH(gen(8, Json{{"ring_degree", 2}, {"window_size", 2}}), Contains("parallel.window_size"));
  CHECK_THROWS_WITH(gen(8, Json{{"ring_degree", 2.5}}), Contains("'parallel.ring_degree' = 2.5"));
}

TEST_CASE("model::schedules: usp's search hook lists every (u, r) with the ring variants that can apply") {
  Scenario sc = test::scenario_with("usp", 8, {256}, "causal", "fwd", Json{{"ring_degree", 8}});
  std::vector<Json> v = usp_variants(sc);
  CHECK(v.size() == 3 + 3 + 3 + 1); // u = 1, 2, 4 with three variants; u = 8 is pure Ulysses
  Scenario full = test::scenario_with("usp", 8, {256}, Json{{"kind", "full"}}, "fwd", Json{{"ring_degree", 8}});
  CHECK(usp_variants(full).size() == 2 + 2 + 2 + 1);
}
