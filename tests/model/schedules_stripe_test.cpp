// Stripe (schedules.md 3.4) and the strided token ranges it needs: MaskGeometry on strided
// rectangles against brute force, the IR round trip of strides, and stripe's closed forms.
#include "cpsim/model/schedule_json.hpp"
#include "schedules_test_support.hpp"

#include <random>

using namespace cpsim;
using Catch::Contains;

namespace {
int64_t brute_cells(const MaskGeometry& m, int seq, TokenRange q, TokenRange k) {
  int64_t c = 0;
  for (int64_t a = 0; a < q.size(); ++a)
    for (int64_t b = 0; b < k.size(); ++b)
      c += m.visible(seq, q.at(a), k.at(b));
  return c;
}

TokenRange random_range(std::mt19937& rng, int64_t n) {
  std::uniform_int_distribution<int64_t> pos(0, n - 1), st(1, 9);
  int64_t s = st(rng), b = pos(rng);
  int64_t count = std::uniform_int_distribution<int64_t>(0, (n - 1 - b) / s + 1)(rng);
  return count == 0 ? TokenRange{b, b, s} : TokenRange{b, b + (count - 1) * s + 1, s};
}
} // namespace

TEST_CASE("model::MaskGeometry: strided rectangles count cells and tiles as brute force does") {
  std::mt19937 rng(777);
  for (const Json& mask : test::all_masks()) {
    Workload w = workload_from_json(Json{{"seq_lens", {97, 130}}, {"heads", 2}, {"kv_heads", 1}, {"head_dim", 8},
                                         {"dtype", "bf16"}, {"mask", mask}},
                                    "workload", "");
    MaskGeometry m(w);
    for (int trial = 0; trial < 300; ++trial) {
      int seq = trial % 2;
      TokenRange q = random_range(rng, w.seq_lens[size_t(seq)]), k = random_range(rng, w.seq_lens[size_t(seq)]);
      INFO("mask " << mask.dump() << " q " << q.begin << ":" << q.end << ":" << q.stride << " k " << k.begin << ":"
                   << k.end << ":" << k.stride);
      REQUIRE(m.cells(seq, q, k) == brute_cells(m, seq, q, k));
      const int64_t tm = 4, tn = 3;
      int64_t full = 0, partial = 0;
      for (int64_t i = 0; i < q.size(); i += tm)
        for (int64_t j = 0; j < k.size(); j += tn) {
          TokenRange qt = sub_range(q, i, std::min(q.size(), i + tm)), kt = sub_range(k, j, std::min(k.size(), j + tn));
          int64_t c = brute_cells(m, seq, qt, kt);
          full += c == qt.size() * kt.size();
          partial += c > 0 && c < qt.size() * kt.size();
        }
      TileCount t = m.tiles(seq, q, k, tm, tn);
      REQUIRE(t.full == full);
      REQUIRE(t.partial == partial);
    }
  }
}

TEST_CASE("model::MaskGeometry: strided causal counts stay exact for long sequences") {
  Workload w = workload_from_json(Json{{"seq_lens", {int64_t(1) << 22}}, {"heads", 1}, {"kv_heads", 1}, {"head_dim", 8},
                                       {"dtype", "bf16"}, {"mask", "causal"}},
                                  "workload", "");
  MaskGeometry m(w);
  const int64_t W = 8, c = (int64_t(1) << 22) / W;
  for (int64_t r = 0; r < W; ++r)
    for (int64_t j = 0; j < W; ++j) {
      TokenRange q{r, r + (c - 1) * W + 1, W}, k{j, j + (c - 1) * W + 1, W};
      CHECK(m.cells(0, q, k) == (j <= r ? c * (c + 1) / 2 : c * (c - 1) / 2));
    }
}

TEST_CASE("model::schedules: stripe covers every causal cell exactly once, forward and backward") {
  for (int cp : {2, 4})
    for (std::vector<int64_t> lens : {std::vector<int64_t>{64, 128}, std::vector<int64_t>{96}}) {
      Scenario sc = test::scenario_with("stripe", cp, lens, Json{{"kind", "causal"}}, "fwd_bwd", Json::object());
      INFO("cp " << cp << " seqs " << lens.size());
      test::check_exactly_once(generate_schedule(sc), sc);
    }
}

TEST_CASE("model::schedules: stripe per-rank cells, steps and bytes match schedules.md 3.4") {
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const int64_t S = 512, c = S / W, B_KV = 2 * c * G * D * e;
  Scenario sc = test::scenario_with("stripe", W, {S}, Json{{"kind", "causal"}}, "fwd_bwd", Json::object(), H, G, D);
  Schedule s = generate_schedule(sc);
  for (int r = 0; r < W; ++r) {
    INFO("rank " << r);
    double cells = double((r + 1) * c * (c + 1) / 2 + (W - 1 - r) * c * (c - 1) / 2);
    CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * H * D));
    CHECK(test::flops_of(s, sc.workload, r, Direction::BACKWARD) == Approx(2.5 * 4.0 * cells * H * D));
    CHECK(test::count_ops(s, r, OpKind::ATTENTION, "fwd attn") == W);
    CHECK(test::count_ops(s, r, OpKind::ATTENTION, "bwd attn") == W);
    CHECK(test::sent_by(s, r, "fwd") == (W - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd kv") == (W - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd dkv") == W * B_KV * 4 / e);
    // step s holds the KV of rank j = (r - s) mod W: inclusive diagonal iff j <= r
    for (const auto& op : s.ranks[size_t(r)].ops)
      if (op.kind == OpKind::ATTENTION && op.dir == Direction::FORWARD) {
        int step = std::stoi(op.label.substr(op.label.rfind(' ') + 1));
        int j = (r - step + W) % W;
        CHECK(op.cells == (j <= r ? c * (c + 1) / 2 : c * (c - 1) / 2));
        REQUIRE(op.segments.size() == 1);
        CHECK(op.segments[0].q == TokenRange{r, r + (c - 1) * W + 1, W});
        CHECK(op.segments[0].k == TokenRange{j, j + (c - 1) * W + 1, W});
      }
  }
}

TEST_CASE("model::schedule_json: strides survive the round trip and appear only when not 1") {
  auto first_attention = [](const Json& plan, int rank) {
    const Json& ops = plan["ranks"][size_t(rank)]["ops"];
    for (size_t i = 0; i < ops.size(); ++i)
      if (ops[i]["kind"] == "attention")
        return i;
    FAIL("no attention op");
    return size_t(0);
  };
  Scenario sc = test::scenario_with("stripe", 2, {64}, Json{{"kind", "causal"}}, "fwd_bwd", Json::object());
  Schedule s = generate_schedule(sc);
  Json j = schedule_to_json(s);
  Schedule back = schedule_from_json(Json::parse(j.dump()), "schedule");
  CHECK(schedule_to_json(back) == j);
  const size_t a = first_attention(j, 1);
  CHECK(back.ranks[1].ops[a].segments == s.ranks[1].ops[a].segments);
  CHECK(j["ranks"][1]["buffers"][0]["tokens"][0] == Json::array({0, 1, 64, 2}));
  CHECK(j["ranks"][1]["ops"][a]["segments"][0]["q"] == Json::array({1, 64, 2}));
  Json ring = schedule_to_json(generate_schedule(test::scenario_with("ring", 2, {64}, "causal", "fwd", Json::object())));
  CHECK(ring["ranks"][0]["buffers"][0]["tokens"][0].size() == 3);
  CHECK(ring["ranks"][0]["ops"][first_attention(ring, 0)]["segments"][0]["q"].size() == 2);
  Json bad = j;
  bad["ranks"][1]["ops"][a]["segments"][0]["q"] = {1, 64, 0};
  CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("stride"));
  bad = j;
  bad["ranks"][1]["buffers"][0]["tokens"][0] = {0, 1, 64, -2};
  CHECK_THROWS_WITH(schedule_from_json(bad, "schedule"), Contains("stride"));
}

TEST_CASE("model::schedules: stripe rejects what it cannot run, naming the key") {
  CHECK_THROWS_WITH(generate_schedule(test::scenario_with("stripe", 4, {64}, Json{{"kind", "full"}}, "fwd", Json::object())),
                    Contains("workload.mask.kind") && Contains("causal"));
  CHECK_THROWS_WITH(generate_schedule(test::scenario_with("stripe", 4, {66}, "causal", "fwd", Json::object())),
                    Contains("workload.seq_lens[0]") && Contains("divisible by 4"));
  CHECK_THROWS_WITH(generate_schedule(test::scenario_with("stripe", 4, {64}, "causal", "fwd", Json{{"window", 2}})),
                    Contains("parallel.window"));
}
