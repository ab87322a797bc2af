// CQS-Attention (schedules.md 7): difference sets (table and Singer over GF(q^3), prime powers
// included), the partition's exclusive ownership, and the schedule against its closed forms: fork
// and join bytes, FLOPs (N^2/W cells), one launch and one k-way merge per worker, memory about 1/W
// of single-device attention, exactly-once coverage, and the configuration errors.
#include "cpsim/model/cqs_partition.hpp"
#include "cpsim/model/difference_sets.hpp"
#include "cpsim/model/memory_model.hpp"
#include "schedules_test_support.hpp"

using namespace cpsim;
using Catch::Contains;

namespace {
const Json kFull{{"kind", "full"}}, kCausal{{"kind", "causal"}};
}

TEST_CASE("model::cqs: the tabulated and Singer sets are perfect difference sets") {
  for (int64_t W : {3, 7, 13, 21, 31, 57, 73, 91}) {
    INFO("W " << W);
    CHECK(is_perfect_difference_set(tabulated_difference_set(W), W));
  }
  for (int64_t q : {2, 3, 4, 5, 7, 8, 9, 11, 13, 16, 17, 25, 27}) {
    INFO("q " << q);
    const int64_t W = q * q + q + 1;
    std::vector<int64_t> d = singer_difference_set(q);
    CHECK(int64_t(d.size()) == q + 1);
    CHECK(d.front() == 0);
    CHECK(is_perfect_difference_set(d, W));
    CHECK(singer_order(W) == q);
  }
  CHECK(prime_power(9) == std::make_pair(int64_t(3), 2));
  CHECK(prime_power(6) == std::nullopt);
  CHECK(singer_order(43) == std::nullopt); // 43 = 6^2 + 6 + 1, but 6 is no prime power
  CHECK_FALSE(is_perfect_difference_set({0, 1, 2}, 7));
  CHECK_FALSE(is_perfect_difference_set({0, 1, 3, 3}, 7));
}

TEST_CASE("model::cqs: every group cell has exactly one owner, W cells per worker for a PDS") {
  std::vector<std::pair<int, std::vector<int64_t>>> sets;
  for (int W : {3, 7, 13, 21, 31, 57, 73, 91})
    sets.push_back({W, tabulated_difference_set(W)});
  sets.push_back({133, singer_difference_set(11)});
  for (const auto& [W, I] : sets) {
    INFO("W " << W);
    CqsPartition p = cqs_partition(W, I);
    std::vector<int> claims(size_t(W * W), 0);
    for (int i = 0; i < W; ++i) {
      CHECK(int(p.cells[size_t(i)].size()) == W);
      CHECK(p.material[size_t(i)].size() == I.size());
      for (auto [x, y] : p.cells[size_t(i)]) {
        ++claims[size_t(x * W + y)];
        CHECK(p.owner_of(x, y) == i);
      }
    }
    CHECK(std::count(claims.begin(), claims.end(), 1) == W * W);
  }
  // the relaxed set {0,1,2} for W = 4 (from the repo) shows the W/2 tie rule: 3 or 5 cells
  CqsPartition r = cqs_partition(4, {0, 1, 2});
  std::vector<size_t> n;
  for (const auto& c : r.cells)
    n.push_back(c.size());
  CHECK(std::count(r.owner.begin(), r.owner.end(), -1) == 0);
  CHECK(*std::min_element(n.begin(), n.end()) == 3);
  CHECK(*std::max_element(n.begin(), n.end()) == 5);
  CHECK(cqs_group_range(10, 3, 0) == std::make_pair(int64_t(0), int64_t(3)));
  CHECK(cqs_group_range(10, 3, 2) == std::make_pair(int64_t(6), int64_t(10)));
}

TEST_CASE("model::cqs: each visible cell is computed exactly once, by workers that never talk") {
  for (int W : {3, 7, 13})
    for (const Json& mask : test::all_masks()) {
      Scenario sc = test::scenario_with("cqs", W, {int64_t(W) * 6, int64_t(W) * 5 + 3}, mask, "fwd", Json::object(), 4, 2, 64, "dgx-h100:2");
      INFO("W " << W << " mask " << mask.dump());
      Schedule s = generate_schedule(sc);
      test::check_exactly_once(s, sc);
      for (int r = 0; r < W; ++r)
        for (const auto& op : s.ranks[size_t(r)].ops) // every transfer is fork (before compute) or join (after)
          if (op.kind == OpKind::SEND || op.kind == OpKind::RECV)
            CHECK((op.label.rfind("fork", 0) == 0 || op.label.rfind("join", 0) == 0));
    }
}

TEST_CASE("model::cqs: bytes, FLOPs, launches and merges per worker match the closed forms") {
  const int H = 4, G = 2, D = 64, e = 2;
  for (int W : {7, 13, 21}) {
    const int64_t g = 16, N = W * g, k = int64_t(tabulated_difference_set(W).size());
    Scenario sc = test::scenario_with("cqs", W, {N}, kFull, "fwd", Json::object(), H, G, D, "dgx-h100:4");
    Schedule s = generate_schedule(sc);
    for (int r = 0; r < W; ++r) {
      INFO("W " << W << " rank " << r);
      CHECK(test::sent_by(s, r, "fork") == (k - 1) * g * (H + 2 * G) * D * e);
      CHECK(test::sent_by(s, r, "join") == (k - 1) * g * (H * D * e + 4 * H));
      CHECK(test::flops_of(s, sc.workload, r, Direction::FORWARD) == Approx(4.0 * double(N * N / W) * H * D));
      CHECK(test::count_ops(s, r, OpKind::ATTENTION) == 1);
      CHECK(test::count_ops(s, r, OpKind::MERGE) == 1);
      for (const auto& op : s.ranks[size_t(r)].ops)
        if (op.kind == OpKind::MERGE)
          CHECK(op.inputs == k);
    }
    // causal: each kept pair leaves one full block, the own diagonal a triangle (W/2 blocks)
    Scenario cs = test::scenario_with("cqs", W, {N}, kCausal, "fwd", Json::object(), H, G, D, "dgx-h100:4");
    Schedule c = generate_schedule(cs);
    for (int r = 0; r < W; ++r)
      CHECK(test::flops_of(c, cs.workload, r, Direction::FORWARD) ==
            Approx(4.0 * double((W - 1) / 2 * g * g + g * (g + 1) / 2) * H * D));
  }
}

TEST_CASE("model::cqs: worker memory is the closed form, about 1/W of single-device attention") {
  const int H = 4, G = 2, D = 64, e = 2;
  for (int W : {7, 13}) {
    const int64_t g = 512, N = W * g, k = int64_t(tabulated_difference_set(W).size());
    Scenario sc = test::scenario_with("cqs", W, {N}, kFull, "fwd", Json::object(), H, G, D, "dgx-h100:4");
    Schedule s = generate_schedule(sc);
    const int64_t persistent = g * (2 * H * D * e + 2 * G * D * e + 4 * H);
    // during the launch: the material (own group copied in, k - 1 received) and the partials of all its rows
    const int64_t peak = persistent + k * g * (H + 2 * G) * D * e + k * g * (H * D * e + 4 * H) + W * g * g * H * 4;
    // one device materialising the N x N fp32 scores with its Q, K, V, O and LSE
    const double single = double(N * N * H * 4 + N * (2 * H * D * e + 2 * G * D * e + 4 * H));
    for (int r = 0; r < W; ++r) {
      MemoryUse mu = rank_memory(s.ranks[size_t(r)]);
      CHECK(mu.persistent_bytes == persistent);
      CHECK(mu.peak_bytes == peak);
      CHECK(double(mu.peak_bytes) * W / single == Approx(1.0).margin(0.1));
    }
    Schedule flash = generate_schedule(
        test::scenario_with("cqs", W, {N}, kFull, "fwd", Json{{"scores", "flash"}}, H, G, D, "dgx-h100:4"));
    CHECK(rank_memory(flash.ranks[0]).peak_bytes == peak - W * g * g * H * 4);
  }
}

TEST_CASE("model::cqs: bad configurations name the key, the value and the reason") {
  auto gen = [](int cp, std::vector<int64_t> lens, const Json& opts, const std::string& pass = "fwd") {
    return generate_schedule(test::scenario_with("cqs", cp, lens, kFull, pass, opts, 4, 2, 64, "dgx-h100:4"));
  };
  CHECK_THROWS_WITH(gen(8, {64}, Json::object()), Contains("'parallel.cp' = 8") && Contains("difference set"));
  CHECK_THROWS_WITH(gen(2, {64}, Json::object()), Contains("'parallel.cp' = 2") && Contains("at least 3"));
  CHECK_THROWS_WITH(gen(7, {64}, Json::object(), "fwd_bwd"), Contains("'pass'") && Contains("forward only"));
  CHECK_THROWS_WITH(gen(7, {5}, Json::object()), Contains("workload.seq_lens[0]") && Contains("5"));
  CHECK_THROWS_WITH(gen(7, {70}, Json{{"interest_set", {0, 1, 2}}}),
                    Contains("parallel.interest_set") && Contains("not a perfect difference set"));
  CHECK_THROWS_WITH(gen(7, {70}, Json{{"interest_set", {1, 2, 4}}}), Contains("must start with 0"));
  CHECK_THROWS_WITH(gen(7, {70}, Json{{"scores", "dense"}}), Contains("parallel.scores") && Contains("dense"));
  CHECK_THROWS_WITH(gen(7, {70}, Json{{"ring", 2}}), Contains("parallel.ring"));
  // an explicit PDS other than the table's is accepted: {0,1,5} mod 7 has differences 1, 4, 5 and their negatives
  CHECK_NOTHROW(gen(7, {70}, Json{{"interest_set", {0, 1, 5}}}));
}
