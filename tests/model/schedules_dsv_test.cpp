// DSV (schedules.md 6): per-head masks, LPT head placement against the naive ordered split, the
// uneven HCP all-to-all and the sparse SCP exchange against their closed forms, the predictor's
// ops, memory of the head-sharded buffers, exactly-once coverage for every degree pair, and errors.
#include "schedules_test_support.hpp"

#include <algorithm>
#include <map>

using namespace cpsim;
using Catch::Matchers::Contains;

namespace {
const Json kSkewed{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.9, 0.8, 0.1, 0.1}}, {"seed", 2}};

std::string error_of(const Scenario& sc) {
  try {
    generate_schedule(sc);
  } catch (const UserError& e) {
    return e.what();
  }
  return "no error";
}

std::vector<int> heads_of(const Schedule& s, int rank) {
  for (const auto& op : s.ranks[size_t(rank)].ops)
    if (op.kind == OpKind::ATTENTION)
      return op.head_list();
  return {};
}

int64_t bytes_sent_to(const Schedule& s, int rank, const std::string& prefix) { return test::sent_by(s, rank, prefix); }
} // namespace

TEST_CASE("model::MaskGeometry: per-head masks count each head's layout; head-agnostic counts see the union") {
  Json j = test::scenario_json("ring", 1, {64},
                               Json{{"kind", "block_sparse"}, {"block", 16},
                                    {"layout_file", CPSIM_TEST_DATA "/layout_heads_2x64.json"}},
                               "fwd", 2, 2, 64);
  Scenario sc = test::make_scenario(j);
  MaskGeometry m(sc.workload);
  REQUIRE(m.per_head());
  CHECK(m.total_cells(0, 0) == 4 * 16 * 16); // diagonal blocks only
  CHECK(m.total_cells(0, 1) == 64 * 64);     // dense
  CHECK(m.total_cells(0) == 64 * 64);        // union
  Scenario rnd = test::scenario_with("ring", 1, {256}, kSkewed, "fwd", Json::object(), 4, 4);
  MaskGeometry mr(rnd.workload);
  for (int h = 0; h < 4; ++h) {
    int64_t brute = 0;
    for (int64_t i = 0; i < 256; ++i)
      for (int64_t k = 0; k < 256; ++k)
        brute += mr.visible(0, h, i, k);
    CHECK(mr.cells(0, h, {0, 256}, {0, 256}) == brute);
    CHECK(mr.cells(0, h, {16, 200}, {8, 250}) <= mr.cells(0, {16, 200}, {8, 250}));
  }
  CHECK(mr.total_cells(0, 0) > 3 * mr.total_cells(0, 2)); // the densities differ strongly by head
}

TEST_CASE("model::workload: per-head densities and head layouts are validated strictly") {
  auto err = [](Json mask, int heads = 4) {
    try {
      Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {64}, std::move(mask), "fwd", heads, heads, 64));
      MaskGeometry m(sc.workload); // layout files are read here
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(err(Json{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.5, 0.5}}, {"seed", 1}}),
             Contains("'workload.mask.head_densities' has 2 entries") && Contains("heads = 4"));
  CHECK_THAT(err(Json{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.5, 0.5, 1.5, 0.5}}, {"seed", 1}}),
             Contains("head_densities") && Contains("1.5") && Contains("(0, 1]"));
  CHECK_THAT(err(Json{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.5}}, {"density", 0.5}, {"seed", 1}},
                 1),
             Contains("exactly one of"));
  CHECK_THAT(err(Json{{"kind", "block_sparse"}, {"block", 16}, {"layout_file", CPSIM_TEST_DATA "/layout_heads_2x64.json"}}),
             Contains("one layout per query head"));
}

TEST_CASE("model::schedules: dsv sparsity-aware HCP balances heads by sparse work (LPT) where the naive split does not") {
  const int W = 2, H = 4, D = 64;
  auto sc = [&](bool aware) {
    return test::scenario_with("dsv", W, {256}, kSkewed, "fwd", Json{{"hcp", W}, {"sparsity_aware", aware}}, H, H, D);
  };
  MaskGeometry m(sc(true).workload);
  std::vector<int64_t> work(H);
  for (int h = 0; h < H; ++h)
    work[size_t(h)] = m.total_cells(0, h);
  // LPT by hand: heads by work descending, each to the lighter rank
  std::vector<int> order = {0, 1, 2, 3};
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return work[size_t(a)] > work[size_t(b)]; });
  int64_t load[2] = {0, 0};
  std::map<int, int> owner;
  for (int h : order) {
    int r = load[1] < load[0] ? 1 : 0;
    owner[h] = r;
    load[r] += work[size_t(h)];
  }
  Schedule aware = generate_schedule(sc(true)), naive = generate_schedule(sc(false));
  double max_aware = 0, max_naive = 0;
  for (int r = 0; r < W; ++r) {
    double fa = test::flops_of(aware, sc(true).workload, r, Direction::FORWARD);
    double fn = test::flops_of(naive, sc(false).workload, r, Direction::FORWARD);
    CHECK(fa == Approx(4.0 * D * double(load[r])));
    for (int h : heads_of(aware, r))
      CHECK(owner[h] == r);
    CHECK(heads_of(naive, r) == std::vector<int>{2 * r, 2 * r + 1});
    max_aware = std::max(max_aware, fa);
    max_naive = std::max(max_naive, fn);
  }
  CHECK(max_aware < max_naive);
  test::check_exactly_once(aware, sc(true));
}

TEST_CASE("model::schedules: dsv uneven HCP all-to-all sends c(H - H_r)D per input tensor and H_r c (N-1) D for O") {
  const int W = 2, H = 4, D = 64, e = 2, S = 256;
  Scenario sc = test::scenario_with("dsv", W, {S}, kSkewed, "fwd", Json{{"hcp", W}}, H, H, D);
  Schedule s = generate_schedule(sc);
  const int64_t c = S / W;
  for (int r = 0; r < W; ++r) {
    const int64_t Hr = int64_t(heads_of(s, r).size());
    for (const char* t : {"hcp a2a q", "hcp a2a k", "hcp a2a v"})
      CHECK(bytes_sent_to(s, r, t) == c * (H - Hr) * D * e);
    CHECK(bytes_sent_to(s, r, "hcp a2a o") == Hr * c * (W - 1) * D * e);
    // memory: head-sharded q, k, v, o over the whole sequence, 4 e S D H_r (the solver's figure)
    int64_t sharded = 0;
    for (const auto& b : s.ranks[size_t(r)].buffers)
      if (b.name == "q_h" || b.name == "k_h" || b.name == "v_h" || b.name == "o_h")
        sharded += b.bytes;
    CHECK(sharded == 4 * e * S * D * Hr);
  }
}

TEST_CASE("model::schedules: dsv sparse SCP moves only the needed KV rows; naive SCP all-gathers them") {
  const int W = 2, H = 2, G = 2, D = 64, e = 2, S = 64;
  // query block 2 (rank 1) needs key block 0 (rank 0): 16 tokens per KV head cross the chunk line
  const Json mask{{"kind", "block_sparse"}, {"block", 16}, {"layout_file", CPSIM_TEST_DATA "/layout_dsv_scp_64.json"}};
  auto sc = [&](bool aware, const std::string& pass) {
    return test::scenario_with("dsv", W, {S}, mask, pass, Json{{"scp", W}, {"sparsity_aware", aware}}, H, G, D);
  };
  Schedule s = generate_schedule(sc(true, "fwd_bwd"));
  CHECK(bytes_sent_to(s, 0, "scp a2a k") == 16 * G * D * e);
  CHECK(bytes_sent_to(s, 0, "scp a2a v") == 16 * G * D * e);
  CHECK(bytes_sent_to(s, 1, "scp a2a k") == 0);
  CHECK(bytes_sent_to(s, 1, "scp a2a index") == 12 * 16 * G);
  CHECK(bytes_sent_to(s, 0, "scp a2a index") == 0);
  CHECK(bytes_sent_to(s, 0, "scp a2a counts") == 4 * (W - 1));
  CHECK(bytes_sent_to(s, 1, "scp a2a dk") == 16 * G * D * e); // gradients go home
  CHECK(bytes_sent_to(s, 0, "scp a2a dk") == 0);
  // gathered K (and V) per rank: the local chunk plus the needed remote rows, per KV head
  auto bytes_of = [&](const Schedule& x, int r, const std::string& name) {
    for (const auto& b : x.ranks[size_t(r)].buffers)
      if (b.name == name)
        return b.bytes;
    return int64_t(-1);
  };
  // one gathered K buffer per KV group: its own chunk plus the remote rows its query heads need
  auto gathered_k = [&](const Schedule& x, int r) {
    int64_t sum = 0;
    for (const auto& b : x.ranks[size_t(r)].buffers)
      if (b.name.rfind("k_scp_g", 0) == 0)
        sum += b.bytes;
    return sum;
  };
  CHECK(gathered_k(s, 0) == (S / W) * G * D * e);
  CHECK(gathered_k(s, 1) == ((S / W) * G + 16 * G) * D * e);
  CHECK(bytes_of(s, 1, "k_scp_g0") == (S / W + 16) * D * e);
  test::check_exactly_once(s, sc(true, "fwd_bwd"));
  Schedule n = generate_schedule(sc(false, "fwd_bwd"));
  for (int r = 0; r < W; ++r) {
    CHECK(bytes_of(n, r, "k_scp") == S * G * D * e); // naive: every key row
    CHECK(bytes_sent_to(n, r, "scp ag k") == (W - 1) * (S / W) * G * D * e);
    CHECK(bytes_sent_to(n, r, "scp rs dv") == (W - 1) * (S / W) * G * D * e);
  }
  test::check_exactly_once(n, sc(false, "fwd_bwd"));
}

TEST_CASE("model::schedules: dsv predictor costs 2 p S d_lr H_r FLOPs of estimate plus a top-k, as IR compute ops") {
  const int W = 2, H = 4, D = 64, S = 256, lr = 8, qg = 4;
  Scenario sc = test::scenario_with("dsv", W, {S}, kSkewed, "fwd",
                                    Json{{"hcp", 1}, {"scp", W}, {"predictor_rank", lr}, {"query_group", qg}}, H, H, D);
  Schedule s = generate_schedule(sc);
  for (int r = 0; r < W; ++r) {
    CHECK(test::count_ops(s, r, OpKind::COMPUTE, "predictor") == 3); // project, scores, top-k
    const int64_t proxies = (S / W) / qg;
    for (const auto& op : s.ranks[size_t(r)].ops) {
      if (op.label == "predictor scores q_lr k_lr^T")
        CHECK(op.flops == 2 * proxies * S * lr * H);
      if (op.label == "predictor project q_lr k_lr")
        CHECK(op.flops == 2 * (S / W) * D * lr * (H + H));
      if (op.kind == OpKind::COMPUTE)
        CHECK(op.bytes > 0);
    }
    CHECK(test::sent_by(s, r, "predictor ag k_lr") == (W - 1) * (S / W) * H * lr * 2);
  }
}

TEST_CASE("model::schedules: dsv covers every cell once for every (hcp, scp), naive and aware, forward and backward") {
  const Json mask{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.7, 0.2, 0.5, 0.3}}, {"seed", 9}};
  for (const Json& v : dsv_variants(test::scenario_with("dsv", 4, {128}, mask, "fwd", Json{{"hcp", 1}}, 4, 4))) {
    Scenario sc = test::scenario_with("dsv", 4, {128, 64}, mask, "fwd_bwd", v, 4, 4);
    INFO(v.dump());
    Schedule s = generate_schedule(sc);
    test::check_exactly_once(s, sc);
  }
}

TEST_CASE("model::schedules: dsv steps: hcp-1 pairwise steps per HCP tensor, counts + 3 uneven exchanges over SCP, then 2 back") {
  for (auto [hcp, scp] : {std::pair<int, int>{4, 1}, {1, 4}, {2, 2}}) {
    Scenario sc = test::scenario_with("dsv", 4, {256}, kSkewed, "fwd_bwd", Json{{"hcp", hcp}, {"scp", scp}}, 4, 4);
    Schedule s = generate_schedule(sc);
    INFO("hcp " << hcp << " scp " << scp);
    for (int r = 0; r < 4; ++r) {
      // forward q, k, v, o and backward do, dq, dk, dv: one send per step of each exchange
      CHECK(test::count_ops(s, r, OpKind::SEND, "hcp a2a") == 8 * (hcp - 1));
      // forward counts, index, k, v and backward dk, dv (schedules.md 6.3: 4 uneven all-to-alls incl. counts), each
      // a pairwise exchange; the owner sums its own and the received partial dK, dV
      CHECK(test::count_ops(s, r, OpKind::SEND, "scp a2a") == 6 * (scp - 1));
      CHECK(test::count_ops(s, r, OpKind::SEND, "scp a2a counts") == scp - 1);
      CHECK(test::count_ops(s, r, OpKind::MERGE, "scp sum") == (scp > 1 ? 2 : 0));
      CHECK(test::count_ops(s, r, OpKind::COMPUTE, "scp copy own") == (scp > 1 ? 1 : 0));
      CHECK(test::count_ops(s, r, OpKind::ATTENTION) == 2);
    }
  }
}

TEST_CASE("model::schedules: dsv puts HCP groups on consecutive ranks unless hcp_inner is false") {
  for (bool inner : {true, false}) {
    Scenario sc = test::scenario_with("dsv", 4, {128}, kSkewed, "fwd",
                                      Json{{"hcp", 2}, {"sparsity_aware", false}, {"hcp_inner", inner}}, 4, 4);
    Schedule s = generate_schedule(sc);
    std::vector<int> hgroup, sgroup;
    for (const auto& op : s.ranks[0].ops) {
      if (op.kind == OpKind::COLLECTIVE && op.label == "hcp a2a q")
        hgroup = op.coll_group;
      if (op.kind == OpKind::COLLECTIVE && op.label == "scp ag k")
        sgroup = op.coll_group;
    }
    CHECK(hgroup == (inner ? std::vector<int>{0, 1} : std::vector<int>{0, 2}));
    CHECK(sgroup == (inner ? std::vector<int>{0, 2} : std::vector<int>{0, 1}));
    test::check_exactly_once(s, sc);
  }
}

TEST_CASE("model::schedules: every scheme counts per-head masks head by head and covers every cell once") {
  const Json mask{{"kind", "block_sparse"}, {"block", 16}, {"head_densities", {0.9, 0.1, 0.4, 0.2}}, {"seed", 8}};
  for (const char* scheme : {"ring", "zigzag", "ulysses"}) {
    Scenario sc = test::scenario_with(scheme, 2, {128}, mask, "fwd_bwd", Json::object(), 4, 2);
    Schedule s = generate_schedule(sc);
    test::check_exactly_once(s, sc);
    MaskGeometry m(sc.workload);
    double total = 0, expect = 0;
    for (int r = 0; r < 2; ++r)
      total += test::flops_of(s, sc.workload, r, Direction::FORWARD);
    for (int h = 0; h < 4; ++h)
      expect += 4.0 * double(m.total_cells(0, h)) * 64;
    CHECK(total == Approx(expect)); // FLOPs follow each head's own cells, not the union
  }
}

TEST_CASE("model::schedules: dsv rejects bad configurations naming key, value and reason") {
  auto sc = [](const Json& opts, const Json& mask = kSkewed, int kv = 4) {
    return test::scenario_with("dsv", 4, {256}, mask, "fwd", opts, 4, kv);
  };
  CHECK_THAT(error_of(sc(Json::object())), Contains("'parallel.hcp'") && Contains("needs"));
  CHECK_THAT(error_of(sc(Json{{"hcp", 3}})), Contains("'parallel.hcp' = 3") && Contains("divide cp"));
  CHECK_THAT(error_of(sc(Json{{"hcp", 4}}, kSkewed, 2)), Contains("'parallel.hcp' = 4") && Contains("kv_heads (2)"));
  CHECK_THAT(error_of(sc(Json{{"hcp", 4}, {"sparsity_aware", "yes"}})),
             Contains("'parallel.sparsity_aware' = \"yes\"") && Contains("true or false"));
  CHECK_THAT(error_of(sc(Json{{"hcp", 4}, {"predictor_rank", 0}})), Contains("'parallel.predictor_rank' = 0"));
  CHECK_THAT(error_of(sc(Json{{"hcp", 4}}, Json{{"kind", "causal"}})),
             Contains("'workload.mask.kind' = \"causal\"") && Contains("block_sparse"));
  CHECK_THAT(error_of(sc(Json{{"hcp", 4}, {"degree", 2}})), Contains("'parallel.degree' is not a known key"));
}
