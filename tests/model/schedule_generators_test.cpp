// Every scheme of the foundation against the closed forms of schedules.md sections 2-4: bytes sent
// per rank, FLOPs per rank, number of steps, and every visible (query, key) cell of every head
// computed exactly once across ranks, in the forward and again in the backward.
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/model/timeline.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace cpsim;

namespace {

/** Counts how often each visible cell is computed, per direction; all must be exactly 1. */
void check_exactly_once(const Schedule& s, const Scenario& sc, Direction dir) {
  MaskGeometry m(sc.workload);
  const Workload& w = sc.workload;
  std::vector<std::vector<uint8_t>> count; // [seq] -> heads * n * n
  for (int64_t n : w.seq_lens)
    count.emplace_back(size_t(w.heads * n * n), 0);
  for (const auto& p : s.ranks)
    for (const auto& op : p.ops) {
      if (op.kind != OpKind::ATTENTION || op.dir != dir)
        continue;
      for (const auto& seg : op.segments) {
        int64_t n = w.seq_lens[size_t(seg.seq)];
        for (int h = op.head_begin; h < op.head_end; ++h)
          for (int64_t i = seg.q.begin; i < seg.q.end; ++i)
            for (int64_t j = seg.k.begin; j < seg.k.end; ++j)
              if (m.visible(seg.seq, i, j))
                count[size_t(seg.seq)][size_t((h * n + i) * n + j)]++;
      }
    }
  int64_t wrong = 0;
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t n = w.seq_lens[b];
    for (int h = 0; h < w.heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          wrong += count[b][size_t((h * n + i) * n + j)] != (m.visible(int(b), i, j) ? 1 : 0);
  }
  CHECK(wrong == 0);
}

int64_t sent_by(const Schedule& s, int rank, const std::string& label_prefix = "") {
  int64_t b = 0;
  for (const auto& op : s.ranks[size_t(rank)].ops)
    if (op.label.rfind(label_prefix, 0) == 0)
      b += op_bytes_sent(op);
  return b;
}

int count_ops(const Schedule& s, int rank, OpKind k, Direction d) {
  int n = 0;
  for (const auto& op : s.ranks[size_t(rank)].ops)
    n += op.kind == k && (k != OpKind::ATTENTION || op.dir == d);
  return n;
}

double flops_of(const Schedule& s, const Workload& w, int rank, Direction d) {
  double f = 0;
  for (const auto& op : s.ranks[size_t(rank)].ops)
    if (op.kind == OpKind::ATTENTION && op.dir == d)
      f += attention_flops(op, w);
  return f;
}

} // namespace

TEST_CASE("model::schedules: every visible cell is computed exactly once, for every scheme, mask and pass") {
  for (const std::string scheme : {"ring", "zigzag", "ulysses"})
    for (int cp : {2, 4})
      for (const Json& mask : test::all_masks()) {
        Scenario sc = test::make_scenario(test::scenario_json(scheme, cp, {64, 128}, mask, "fwd_bwd"));
        Schedule s = generate_schedule(sc);
        INFO(scheme << " cp=" << cp << " mask " << mask.dump());
        check_exactly_once(s, sc, Direction::FORWARD);
        check_exactly_once(s, sc, Direction::BACKWARD);
      }
}

TEST_CASE("model::schedules: ring and zigzag bytes per rank match (W-1) B_KV forward and + W B_KV 4/e backward") {
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const int64_t S = 256, c = S / W;
  const int64_t B_KV = 2 * c * G * D * e;
  for (const std::string scheme : {"ring", "zigzag"})
    for (const Json& mask : {Json{{"kind", "causal"}}, Json{{"kind", "full"}}}) {
      Scenario sc = test::make_scenario(test::scenario_json(scheme, W, {S}, mask, "fwd_bwd", H, G, D));
      Schedule s = generate_schedule(sc);
      for (int r = 0; r < W; ++r) {
        INFO(scheme << " rank " << r);
        CHECK(sent_by(s, r, "fwd") == (W - 1) * B_KV);
        CHECK(sent_by(s, r, "bwd kv") == (W - 1) * B_KV);
        CHECK(sent_by(s, r, "bwd dkv") == W * B_KV * 4 / e);
      }
    }
}

TEST_CASE("model::schedules: ring and zigzag backward merges count the bytes the backend moves, no dQ pass") {
  // The attention kernel adds into the fp32 dQ accumulator itself, so a step's accumulate op only sums dKV: the
  // bf16 partial converted into the fp32 accumulator (e + 4 per element), plus, from step 1 on, the received fp32
  // partial added in a second pass (4 + 4 + 4). The final cast reads fp32 dQ and writes it in the input dtype.
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const int64_t S = 256, c = S / W;
  const int64_t kv_elems = 2 * c * G * D, q_elems = c * H * D;
  for (const std::string scheme : {"ring", "zigzag"})
    for (int cp : {1, W}) {
      const int64_t rows = S / cp;
      Scenario sc = test::make_scenario(
          test::scenario_json(scheme, cp, {S}, Json{{"kind", "full"}}, "fwd_bwd", H, G, D));
      Schedule s = generate_schedule(sc);
      for (int r = 0; r < cp; ++r) {
        int steps = 0, casts = 0;
        for (const auto& op : s.ranks[size_t(r)].ops) {
          if (op.kind != OpKind::MERGE || op.dir != Direction::BACKWARD)
            continue;
          INFO(scheme << " cp " << cp << " rank " << r << " " << op.label);
          if (op.label.rfind("bwd accumulate step ", 0) == 0) {
            const bool first = op.label == "bwd accumulate step 0";
            CHECK(op.bytes == kv_elems * (S / c / cp) * (e + 4 + (first ? 0 : 12)));
            ++steps;
          } else {
            CHECK(op.label == "bwd dq cast");
            CHECK(op.bytes == q_elems * (rows / c) * (4 + e));
            ++casts;
          }
        }
        CHECK(steps == cp);
        CHECK(casts == 1);
      }
    }
}

TEST_CASE("model::schedules: ring causal FLOPs per rank are c^2 (r + 1/2) + c/2 cells and steps skip the future") {
  const int W = 4, H = 4, G = 2, D = 64;
  const int64_t S = 512, c = S / W;
  Scenario sc = test::make_scenario(test::scenario_json("ring", W, {S}, Json{{"kind", "causal"}}, "fwd", H, G, D));
  Schedule s = generate_schedule(sc);
  for (int r = 0; r < W; ++r) {
    double cells = double(c * (c + 1) / 2 + r * c * c);
    CHECK(flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * H * D));
    CHECK(count_ops(s, r, OpKind::ATTENTION, Direction::FORWARD) == r + 1);
    CHECK(count_ops(s, r, OpKind::SEND, Direction::FORWARD) == W - 1);
  }
}

TEST_CASE("model::schedules: zigzag causal is balanced: every rank computes W c^2/2 + c/2 cells in W steps") {
  const int W = 4, H = 4, G = 2, D = 64;
  const int64_t S = 512, c = S / W;
  Scenario sc = test::make_scenario(test::scenario_json("zigzag", W, {S}, Json{{"kind", "causal"}}, "fwd_bwd", H, G, D));
  Schedule s = generate_schedule(sc);
  for (int r = 0; r < W; ++r) {
    double cells = double(W * c * c / 2 + c / 2);
    CHECK(flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * cells * H * D));
    CHECK(flops_of(s, sc.workload, r, Direction::BACKWARD) == Approx(2.5 * 4.0 * cells * H * D));
    CHECK(count_ops(s, r, OpKind::ATTENTION, Direction::FORWARD) == W);
    CHECK(count_ops(s, r, OpKind::ATTENTION, Direction::BACKWARD) == W);
  }
}

TEST_CASE("model::schedules: ulysses sends (W-1)/W of Q, KV, O forward and of dO, dQ, dKV backward") {
  const int W = 4, H = 8, G = 4, D = 64, e = 2;
  const int64_t S = 256, c = S / W;
  const int64_t B_Q = c * H * D * e, B_KV = 2 * c * G * D * e;
  Scenario sc = test::make_scenario(test::scenario_json("ulysses", W, {S}, Json{{"kind", "causal"}}, "fwd_bwd", H, G, D));
  Schedule s = generate_schedule(sc);
  MaskGeometry m(sc.workload);
  for (int r = 0; r < W; ++r) {
    CHECK(sent_by(s, r, "a2a q") + sent_by(s, r, "a2a k") + sent_by(s, r, "a2a v") + sent_by(s, r, "a2a o") ==
          (W - 1) * (B_Q + B_KV + B_Q) / W);
    CHECK(sent_by(s, r, "a2a d") == (W - 1) * (B_Q + B_Q + B_KV) / W);
    CHECK(flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * m.total_cells(0) * (H / W) * D));
    CHECK(count_ops(s, r, OpKind::COLLECTIVE, Direction::FORWARD) == 8);
  }
}

TEST_CASE("model::schedules: schemes reject what they cannot split, naming the key") {
  using Catch::Contains;
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(test::scenario_json("zigzag", 4, {100}, "causal"))),
                    Contains("workload.seq_lens[0]") && Contains("divisible by 8"));
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(test::scenario_json("ring", 3, {64, 66}, "causal"))),
                    Contains("workload.seq_lens[0]") && Contains("divisible by 3"));
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(test::scenario_json("ulysses", 8, {64}, "causal", "fwd", 4, 2))),
                    Contains("parallel.cp") && Contains("heads"));
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(test::scenario_json("ulysses", 4, {64}, "causal", "fwd", 12, 3))),
                    Contains("kv_heads"));
  Json j = test::scenario_json("ring", 2, {64}, "causal");
  j["parallel"]["window"] = 4;
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(j)), Contains("parallel.window"));
  CHECK_THROWS_WITH(generate_schedule(test::make_scenario(test::scenario_json("spiral", 2, {64}, "causal"))),
                    Contains("parallel.scheme") && Contains("ring"));
}

TEST_CASE("model::schedules: ulysses with fewer KV heads than ranks replicates KV heads") {
  Scenario sc = test::make_scenario(test::scenario_json("ulysses", 4, {64}, "causal", "fwd", 8, 2));
  Schedule s = generate_schedule(sc);
  check_exactly_once(s, sc, Direction::FORWARD);
}
