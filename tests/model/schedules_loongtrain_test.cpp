// LoongTrain double ring (schedules.md 4.3): exactly-once coverage for every (d_hp, d_cp, w), the
// per-rank bytes of the inner and outer rings and of the head all-to-all (with KV replication),
// FLOPs, the head-first placement, and the named errors.
#include "schedules_test_support.hpp"

using namespace cpsim;
using Catch::Contains;

namespace {
Json lt(int d_hp, int d_cp, int w) { return Json{{"head_degree", d_hp}, {"context_degree", d_cp}, {"window_size", w}}; }
} // namespace

TEST_CASE("model::schedules: loongtrain computes every causal cell exactly once for every degree choice") {
  Scenario base = test::scenario_with("loongtrain", 4, {64, 128}, "causal", "fwd_bwd", lt(1, 4, 1));
  for (const Json& v : loongtrain_variants(base)) {
    Scenario sc = test::scenario_with("loongtrain", 4, {64, 128}, "causal", "fwd_bwd", v);
    INFO(v.dump());
    test::check_exactly_once(generate_schedule(sc), sc);
  }
  Scenario eight = test::scenario_with("loongtrain", 8, {128}, "causal", "fwd_bwd", lt(1, 8, 2), 2, 1);
  test::check_exactly_once(generate_schedule(eight), eight);
}

TEST_CASE("model::schedules: loongtrain inner, outer and all-to-all bytes match schedules.md 4.3") {
  const int W = 8, H = 8, D = 64, e = 2;
  const int64_t S = 1024, c = S / W;
  struct Case {
    int d_hp, d_cp, w, G;
  };
  for (const Case& k : {Case{2, 4, 2, 4}, Case{1, 8, 2, 4}, Case{4, 2, 1, 2}, Case{1, 8, 8, 2}, Case{2, 4, 1, 1}}) {
    const int nw = k.d_cp / k.w;
    const int64_t B_Q = c * H * D * e, B_KV = 2 * c * k.G * D * e;
    const int64_t B_KVx = B_KV * std::max(k.G, k.d_hp) / k.G; // replicated up to d_hp
    Scenario sc = test::scenario_with("loongtrain", W, {S}, "causal", "fwd_bwd", lt(k.d_hp, k.d_cp, k.w), H, k.G, D);
    Schedule s = generate_schedule(sc);
    const int64_t L = S / k.d_cp;
    for (int r = 0; r < W; ++r) {
      INFO("d_hp " << k.d_hp << " d_cp " << k.d_cp << " w " << k.w << " rank " << r);
      CHECK(test::sent_by(s, r, "fwd inner kv") == nw * (k.w - 1) * B_KVx);
      CHECK(test::sent_by(s, r, "fwd outer kv") == (nw - 1) * B_KVx);
      CHECK(test::sent_by(s, r, "bwd inner kv") == nw * (k.w - 1) * B_KVx);
      CHECK(test::sent_by(s, r, "bwd outer kv") == (nw - 1) * B_KVx);
      if (k.w > 1) // fp32 inside the first window, bf16 in the others
        CHECK(test::sent_by(s, r, "bwd inner dkv") == k.w * B_KVx * 4 / e + (nw - 1) * k.w * B_KVx);
      CHECK(test::sent_by(s, r, "bwd outer dkv") == (nw > 1 ? nw * B_KVx : 0));
      CHECK(test::sent_by(s, r, "fwd a2a") == (k.d_hp - 1) * (B_Q + B_KVx + B_Q) / k.d_hp);
      CHECK(test::sent_by(s, r, "bwd a2a") == (k.d_hp - 1) * (B_Q + B_Q + B_KVx) / k.d_hp);
      double cells = double(k.d_cp * L * L / 2 + L / 2); // zigzag over d_cp, per head
      CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * (H / k.d_hp) * D));
      CHECK(test::count_ops(s, r, OpKind::ATTENTION, "fwd attn") == k.d_cp);
    }
  }
}

TEST_CASE("model::schedules: loongtrain backward accumulates count dKV passes only, as the backend runs them") {
  // No dQ pass (the kernel adds into dq_acc). Per element of the bf16 dKV partial: convert into the accumulator
  // (e + acc bytes), then add a carried partial in a second pass (acc + carried + acc), where the accumulator is
  // fp32 in the first window and bf16 after, and a carried partial has the width of its own buffer.
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const int64_t S = 512;
  Schedule s = generate_schedule(test::scenario_with("loongtrain", W, {S}, "causal", "fwd_bwd", lt(1, W, 2), H, G, D));
  const int64_t elems = 2 * (S / W) * G * D; // the rank's zigzag chunks, K and V
  auto width = [&](int r, const std::string& name) {
    for (const auto& b : s.ranks[size_t(r)].buffers)
      if (b.name == name)
        return b.bytes / elems;
    FAIL("no buffer " << name);
    return int64_t(0);
  };
  std::set<int64_t> acc_widths;
  int carried = 0;
  for (int r = 0; r < W; ++r)
    for (const auto& op : s.ranks[size_t(r)].ops) {
      if (op.kind != OpKind::MERGE || op.label.rfind("bwd accumulate step ", 0) != 0)
        continue;
      INFO("rank " << r << " " << op.label);
      REQUIRE(op.reads.size() >= 2);
      CHECK(width(r, op.reads[0]) == e); // the kernel's bf16 partial
      const int64_t acc = width(r, op.writes.at(1));
      acc_widths.insert(acc);
      int64_t per = e + acc;
      if (op.reads.size() == 3) {
        per += 2 * acc + width(r, op.reads[2]);
        ++carried;
      }
      CHECK(op.bytes == elems * per);
    }
  CHECK(acc_widths == std::set<int64_t>{e, 4}); // both windows seen
  CHECK(carried > 0);
}

TEST_CASE("model::schedules: loongtrain places head groups first and keeps the two rings on their own streams") {
  const int W = 8, d_hp = 2, d_cp = 4, w = 2;
  Schedule s = generate_schedule(test::scenario_with("loongtrain", W, {256}, "causal", "fwd_bwd", lt(d_hp, d_cp, w), 8, 4));
  for (int r = 0; r < W; ++r) {
    const int pos = r / d_hp, win = pos / w, in = pos % w;
    for (const auto& op : s.ranks[size_t(r)].ops) {
      const std::string& stream = s.streams[size_t(op.stream)].name;
      if (op.kind == OpKind::COLLECTIVE)
        CHECK(op.coll_group == std::vector<int>{pos * d_hp, pos * d_hp + 1});
      if (op.kind == OpKind::SEND && op.label.rfind("fwd inner", 0) == 0) {
        CHECK(op.peer == (win * w + (in + 1) % w) * d_hp + r % d_hp);
        CHECK(stream == "comm_inner_kv");
      }
      if (op.kind == OpKind::SEND && op.label.rfind("fwd outer", 0) == 0) {
        CHECK(op.peer == (((win + 1) % (d_cp / w)) * w + in) * d_hp + r % d_hp);
        CHECK(stream == "comm_outer_kv");
      }
      if (op.kind == OpKind::SEND && op.label.rfind("bwd outer dkv", 0) == 0)
        CHECK(stream == "comm_outer_dkv");
    }
  }
}

TEST_CASE("model::schedules: loongtrain names the key, value and reason of a bad configuration") {
  auto gen = [](const Json& opts, const Json& mask = "causal", int H = 8, int G = 4) {
    return generate_schedule(test::scenario_with("loongtrain", 8, {256}, mask, "fwd", opts, H, G));
  };
  CHECK_THROWS_WITH(gen(lt(2, 4, 3)), Contains("'parallel.window_size' = 3: must divide context_degree (4)"));
  CHECK_THROWS_WITH(gen(Json{{"head_degree", 3}}), Contains("'parallel.head_degree' = 3: must divide cp (8)"));
  CHECK_THROWS_WITH(gen(lt(2, 2, 1)), Contains("'parallel.context_degree' = 2") && Contains("must equal cp (8)"));
  CHECK_THROWS_WITH(gen(lt(8, 1, 1), "causal", 4, 4), Contains("'parallel.head_degree' = 8") && Contains("heads (4)"));
  CHECK_THROWS_WITH(gen(lt(2, 4, 1), Json{{"kind", "full"}}), Contains("workload.mask.kind") && Contains("causal"));
  CHECK_THROWS_WITH(gen(Json{{"head_degree", 2}, {"interleaved", true}}), Contains("parallel.interleaved"));
  Json ok = lt(2, 4, 2);
  ok.erase("context_degree"); // derived from cp
  CHECK(generate_schedule(test::scenario_with("loongtrain", 8, {256}, "causal", "fwd", ok, 8, 4)).world == 8);
}
