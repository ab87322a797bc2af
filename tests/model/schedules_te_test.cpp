// TransformerEngine CP variants (schedules.md 3.6-3.8) against their closed forms: bytes per rank,
// cells per rank, steps, TE p2p's forward memory (all W KV buffers and step outputs alive), the
// two-stream structure, exactly-once coverage, and the constraints TE asserts.
#include "cpsim/model/memory_model.hpp"
#include "schedules_test_support.hpp"

#include <set>

using namespace cpsim;
using Catch::Contains;

namespace {
const Json kFull{{"kind", "full"}}, kCausal{{"kind", "causal"}}, kWindow{{"kind", "sliding_window"}, {"window", 40}};
}

TEST_CASE("model::schedules: TE variants compute every visible cell exactly once") {
  struct Case {
    std::string scheme;
    std::vector<Json> masks;
  };
  for (const Case& c : {Case{"te_p2p", {kFull, kCausal}}, Case{"te_allgather", {kFull, kCausal, kWindow}},
                        Case{"te_a2a", {kFull, kCausal, kWindow}}})
    for (int cp : {1, 2, 4})
      for (const Json& mask : c.masks) {
        Scenario sc = test::scenario_with(c.scheme, cp, {64, 128}, mask, "fwd_bwd", Json::object(), 4, 4);
        INFO(c.scheme << " cp " << cp << " mask " << mask.dump());
        test::check_exactly_once(generate_schedule(sc), sc);
      }
}

TEST_CASE("model::schedules: te_p2p sends (W-1) B_KV forward and 2(W-1) B_KV (KV + bf16 dKV) backward") {
  const int W = 4, H = 4, G = 2, D = 64;
  const int64_t S = 512, c = S / W, B_KV = 2 * c * G * D * 2;
  for (const Json& mask : {kCausal, kFull}) {
    Scenario sc = test::scenario_with("te_p2p", W, {S}, mask, "fwd_bwd", Json::object(), H, G, D);
    Schedule s = generate_schedule(sc);
    MaskGeometry m(sc.workload);
    for (int r = 0; r < W; ++r) {
      INFO("rank " << r << " mask " << mask.dump());
      CHECK(test::sent_by(s, r, "fwd") == (W - 1) * B_KV);
      CHECK(test::sent_by(s, r, "bwd") == 2 * (W - 1) * B_KV);
      CHECK(test::count_ops(s, r, OpKind::ATTENTION, "fwd attn") == W);
      CHECK(test::count_ops(s, r, OpKind::ATTENTION, "bwd attn") == W);
      CHECK(test::count_ops(s, r, OpKind::MERGE, "fwd lse correction") == W);
      CHECK(test::count_ops(s, r, OpKind::MERGE, "fwd out correction") == W);
      double cells = mask == kCausal ? double(W * c * c / 2 + c / 2) : double(m.total_cells(0)) / W;
      CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * H * D));
      CHECK(test::flops_of(s, sc.workload, r, Direction::BACKWARD) == Approx(2.5 * 4.0 * cells * H * D));
      for (const auto& op : s.ranks[size_t(r)].ops) {
        if (op.kind == OpKind::ATTENTION && op.dir == Direction::FORWARD) { // alternating compute streams
          int step = std::stoi(op.label.substr(op.label.rfind(' ') + 1));
          CHECK(s.streams[size_t(op.stream)].name == "compute_" + std::to_string(step % 2));
        }
        if (op.kind == OpKind::SEND && op.label.rfind("fwd", 0) == 0) // KV moves on as soon as it lands
          for (int d : op.deps)
            CHECK(s.ranks[size_t(r)].ops[size_t(d)].kind == OpKind::RECV);
        if (op.kind == OpKind::SEND && op.label.rfind("bwd", 0) == 0) // reverse ring
          CHECK(op.peer == (r - 1 + W) % W);
      }
    }
  }
}

TEST_CASE("model::schedules: te_p2p keeps all W KV buffers and W step outputs alive in the forward") {
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const int64_t S = 512, c = S / W, B_Q = c * H * D * e, B_KV = 2 * c * G * D * e, B_LSE = 4 * c * H;
  Schedule s = generate_schedule(test::scenario_with("te_p2p", W, {S}, kFull, "fwd", Json::object(), H, G, D));
  for (int r = 0; r < W; ++r) {
    MemoryUse mu = rank_memory(s.ranks[size_t(r)]);
    CHECK(mu.persistent_bytes == 2 * B_Q + B_KV + B_LSE);
    CHECK(mu.peak_bytes == 2 * B_Q + W * B_KV + B_LSE + W * (B_Q + B_LSE) + 2 * B_LSE); // + fp64 running LSE
  }
}

TEST_CASE("model::schedules: te_allgather gathers (W-1) B_KV, then all-gathers and reduce-scatters in the backward") {
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const int64_t S = 512, c = S / W, h = S / (2 * W), B_Q = c * H * D * e, B_KV = 2 * c * G * D * e, B_LSE = 4 * c * H;
  Scenario sc = test::scenario_with("te_allgather", W, {S}, kCausal, "fwd_bwd", Json::object(), H, G, D);
  Schedule s = generate_schedule(sc);
  Schedule fwd = generate_schedule(test::scenario_with("te_allgather", W, {S}, kCausal, "fwd", Json::object(), H, G, D));
  for (int r = 0; r < W; ++r) {
    INFO("rank " << r);
    CHECK(test::sent_by(s, r, "fwd") == (W - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd ag") == (W - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd rs") == (W - 1) * B_KV);
    // both chunks see a key prefix: balanced S^2/(2W) cells plus the diagonal
    double cells = double(2 * W * h * h + h);
    CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * H * D));
    CHECK(test::count_ops(s, r, OpKind::ATTENTION, "fwd attn") == 2);
    std::set<int> streams;
    for (const auto& op : s.ranks[size_t(r)].ops)
      if (op.kind == OpKind::ATTENTION)
        streams.insert(op.stream);
    CHECK(streams.size() == 2);
    CHECK(rank_memory(fwd.ranks[size_t(r)]).peak_bytes == 2 * B_Q + B_KV + B_LSE + W * B_KV);
  }
}

TEST_CASE("model::schedules: te_a2a moves (W-1)/W of Q, KV, O forward and dO, dQ, dKV backward") {
  const int W = 4, H = 8, G = 4, D = 64, e = 2;
  const int64_t S = 256, c = S / W, B_Q = c * H * D * e, B_KV = 2 * c * G * D * e;
  Scenario sc = test::scenario_with("te_a2a", W, {S}, kCausal, "fwd_bwd", Json::object(), H, G, D);
  Schedule s = generate_schedule(sc);
  MaskGeometry m(sc.workload);
  for (int r = 0; r < W; ++r) {
    CHECK(test::sent_by(s, r, "fwd") == (W - 1) * (B_Q + B_KV + B_Q) / W);
    CHECK(test::sent_by(s, r, "bwd") == (W - 1) * (B_Q + B_Q + B_KV) / W);
    CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * m.total_cells(0) * (H / W) * D));
  }
  // tokens enter in DualChunkSwap order
  CHECK(s.ranks[1].buffers[0].tokens == std::vector<TokenSlice>{{0, {32, 64}}, {0, {192, 224}}});
}

TEST_CASE("model::schedules: TE variants reject what TE asserts, naming the key") {
  auto gen = [](const std::string& scheme, int cp, std::vector<int64_t> lens, const Json& mask, int H = 4, int G = 4) {
    return generate_schedule(test::scenario_with(scheme, cp, lens, mask, "fwd", Json::object(), H, G));
  };
  CHECK_THROWS_WITH(gen("te_p2p", 4, {64}, kWindow), Contains("workload.mask.kind") && Contains("sliding_window"));
  for (const std::string scheme : {"te_p2p", "te_allgather", "te_a2a"}) {
    CHECK_THROWS_WITH(gen(scheme, 2, {64}, Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.5}, {"seed", 1}}),
                      Contains("workload.mask.kind") && Contains("block-sparse"));
    CHECK_THROWS_WITH(gen(scheme, 4, {68}, kCausal), Contains("workload.seq_lens[0]") && Contains("divisible by 8"));
  }
  CHECK_THROWS_WITH(gen("te_a2a", 4, {64}, kCausal, 8, 2), Contains("'parallel.cp' = 4") && Contains("kv_heads (2)"));
  Json j = test::scenario_json("te_p2p", 2, {64}, "causal");
  j["parallel"]["cp_comm_type"] = "p2p";
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(j)), Contains("parallel.cp_comm_type"));
}
