// PIT (schedules.md 8): gathered tiles per granularity on a closed-form column pattern, the gather
// op's bytes, the ordering of the three granularities, the all-gather bytes per rank, exactly-once
// coverage and the configuration errors.
#include "schedules_test_support.hpp"

#include <map>

using namespace cpsim;
using Catch::Matchers::Contains;

namespace {
// 1024 tokens, block 16: every query block needs one 16-column block in each 128-column strip.
const Json kColumns{{"kind", "block_sparse"}, {"block", 16}, {"layout_file", CPSIM_TEST_DATA "/layout_pit_columns_1024.json"}};

Scenario pit(int cp, int64_t g, const Json& mask = kColumns, const std::string& pass = "fwd", int heads = 2,
             int kv_heads = 1) {
  return test::scenario_with("pit", cp, {1024}, mask, pass, Json{{"granularity", g}}, heads, kv_heads, 64);
}

std::string error_of(const Scenario& sc) {
  try {
    generate_schedule(sc);
  } catch (const UserError& e) {
    return e.what();
  }
  return "no error";
}

const Op& only(const Schedule& s, int rank, OpKind k, const std::string& prefix) {
  for (const auto& op : s.ranks[size_t(rank)].ops)
    if (op.kind == k && op.label.rfind(prefix, 0) == 0)
      return op;
  FAIL("no op '" << prefix << "'");
  throw;
}
} // namespace

TEST_CASE("model::schedules: pit counts ceil(u_i / 128) dense tiles per query tile after the gather") {
  const int H = 2, G = 1, D = 64, e = 2;
  // per query tile: 8 needed micro-tiles of g columns -> u = 8g columns -> ceil(8g / 128) tiles
  for (auto [g, tiles_per_row] : {std::pair<int64_t, int64_t>{16, 1}, {64, 4}, {128, 8}}) {
    Schedule s = generate_schedule(pit(1, g));
    const Op& a = only(s, 0, OpKind::ATTENTION, "fwd attn");
    CHECK(a.head_summed);
    CHECK(a.tiles_all_heads().total() == H * 8 * tiles_per_row);
    CHECK(a.cells_all_heads() == H * 1024 * 128); // useful cells do not depend on the granularity
    const Op& gather = only(s, 0, OpKind::COMPUTE, "fwd gather");
    CHECK(gather.compute == ComputeKind::GATHER);
    CHECK(gather.granularity == g);
    CHECK_FALSE(gather.gather_rows);
    // a head-uniform mask gathers once for every head: 8 query tiles x 8g columns of every KV head, packed in HBM
    const int64_t kv_rows = G * 8 * 8 * g;
    const int64_t candidates = 8 * (1024 / g), micro = 8 * 8;
    const int64_t packed = 2 * kv_rows * D * e; // K and V
    CHECK(gather.bytes == 2 * packed + candidates + 8 * micro); // read by index, written packed; flags; index
    const Schedule& plan = s;
    int64_t packed_buffer = 0, index_buffer = 0;
    for (const auto& b : plan.ranks[0].buffers) {
      if (b.name == "kv_packed")
        packed_buffer = b.bytes;
      if (b.name == "mt_index")
        index_buffer = b.bytes;
    }
    CHECK(packed_buffer == packed);
    CHECK(index_buffer == 4 * micro);
    if (g == 16) // coverage does not depend on the granularity; check it once (it is the slow part)
      test::check_exactly_once(s, pit(1, g));
  }
}

TEST_CASE("model::schedules: pit along query rows packs per key tile and scatter-merges the partial outputs") {
  const int H = 2;
  // the column pattern seen per key tile: its one needed 16-column block is needed by every query
  // row, so whatever the granularity all 1024 rows are gathered: 8 tiles per key tile, 8 key tiles
  for (int64_t g : {16, 64, 128}) {
    Scenario sc = test::scenario_with("pit", 1, {1024}, kColumns, "fwd", Json{{"granularity", g}, {"axis", "rows"}},
                                      H, 1, 64);
    Schedule s = generate_schedule(sc);
    const Op& a = only(s, 0, OpKind::ATTENTION, "fwd attn");
    CHECK(a.tiles_all_heads().total() == H * 8 * 8);
    CHECK(a.cells_all_heads() == H * 1024 * 128);
    const Op& m = only(s, 0, OpKind::MERGE, "fwd scatter-merge o");
    CHECK(m.rows == 8 * 1024); // one partial per gathered row and key tile, per head
    const Op& gather = only(s, 0, OpKind::COMPUTE, "fwd gather");
    // Q rows of every head, read by index and written packed; one flag per candidate and an index entry per
    // gathered micro-tile, once for all heads (the mask is head-uniform)
    CHECK(gather.bytes == 2 * (8 * 1024) * H * 64 * 2 + 8 * (1024 / g) + 8 * 8 * (1024 / g));
    CHECK(gather.gather_rows);
    if (g == 16)
      test::check_exactly_once(s, sc);
    // the backward gathers Q, dO and O (bf16) and the fp32 LSE of the same rows by the kept index; the partial
    // outputs are one bf16 O and one fp32 LSE per gathered row and head
    Scenario fb = test::scenario_with("pit", 1, {1024}, kColumns, "fwd_bwd", Json{{"granularity", g}, {"axis", "rows"}},
                                      H, 1, 64);
    Schedule sb = generate_schedule(fb);
    const int64_t rows = 8 * 1024, packed = rows * H * 64 * 2, lse = 4 * rows * H, entries = 8 * (1024 / g);
    CHECK(only(sb, 0, OpKind::COMPUTE, "bwd gather").bytes == 2 * (3 * packed + lse) + 4 * entries);
    std::map<std::string, std::pair<std::string, int64_t>> want = {
        {"q_packed", {"q_packed", packed}},          {"o_partial", {"o_packed", packed}},
        {"lse_partial", {"lse_packed", lse}},        {"q_packed_bwd", {"q_packed", 3 * packed}},
        {"lse_packed_bwd", {"lse_packed", lse}},     {"dq_packed", {"dq_packed", packed}}};
    for (const auto& b : sb.ranks[0].buffers)
      if (auto it = want.find(b.name); it != want.end()) {
        CHECK(b.tensor == it->second.first);
        CHECK(b.bytes == it->second.second);
        want.erase(it);
      }
    CHECK(want.empty());
    const Op& scatter = only(sb, 0, OpKind::COMPUTE, "bwd scatter");
    CHECK(scatter.writes == std::vector<std::string>{"dq"});
  }
  CHECK_THAT(error_of(test::scenario_with("pit", 1, {1024}, kColumns, "fwd", Json{{"granularity", 16}, {"axis", "diag"}},
                                          H, 1, 64)),
             Contains("'parallel.axis' = \"diag\"") && Contains("\"rows\""));
}

TEST_CASE("model::schedules: pit granularities order as 16 < 64 < 128 = the plain block-sparse kernel") {
  Scenario sc = pit(1, 16);
  MaskGeometry m(sc.workload);
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, sc.tile_m, sc.tile_n);
  double prev = 0;
  int64_t tiles128 = 0;
  for (int64_t g : {16, 64, 128}) {
    Schedule s = generate_schedule(pit(1, g));
    double t = k.attention_s(only(s, 0, OpKind::ATTENTION, "fwd attn"));
    CHECK(t > prev);
    prev = t;
    tiles128 = only(s, 0, OpKind::ATTENTION, "fwd attn").tiles_all_heads().total();
  }
  // a 128-column micro-tile is a kernel tile: PIT at 128 does what the block-sparse kernel does
  CHECK(tiles128 == 2 * m.tiles(0, {0, 1024}, {0, 1024}, 128, 128).total());
  // the finest granularity gathers fewest bytes but builds the largest index
  Schedule s16 = generate_schedule(pit(1, 16)), s128 = generate_schedule(pit(1, 128));
  CHECK(only(s16, 0, OpKind::COMPUTE, "fwd gather").bytes < only(s128, 0, OpKind::COMPUTE, "fwd gather").bytes);
}

TEST_CASE("model::schedules: pit over cp ranks all-gathers K, V and covers every cell once") {
  const int W = 4, H = 4, G = 2, D = 64, e = 2;
  const Json rnd{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 5}};
  Scenario sc = test::scenario_with("pit", W, {256, 128}, rnd, "fwd_bwd", Json{{"granularity", 32}}, H, G, D);
  Schedule s = generate_schedule(sc);
  test::check_exactly_once(s, sc);
  Scenario rows = test::scenario_with("pit", W, {256, 128}, rnd, "fwd_bwd", Json{{"granularity", 32}, {"axis", "rows"}},
                                      H, G, D);
  test::check_exactly_once(generate_schedule(rows), rows);
  const int64_t c = (256 + 128) / W, B_KV = 2 * c * G * D * e;
  for (int r = 0; r < W; ++r) {
    CHECK(test::sent_by(s, r, "fwd ag kv") == (W - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd ag kv") == (W - 1) * B_KV);
    CHECK(test::sent_by(s, r, "bwd rs dkv") == (W - 1) * B_KV);
    CHECK(test::count_ops(s, r, OpKind::COMPUTE) == 3); // fwd gather, bwd gather, bwd scatter
    CHECK(test::count_ops(s, r, OpKind::COLLECTIVE) == 3); // steps: ag; ag, rs
    // memory: the all-gathered K and V, W B_KV, as in TE's all-gather CP
    int64_t gathered = 0;
    for (const auto& b : s.ranks[size_t(r)].buffers)
      if (b.name == "kv_gathered")
        gathered = b.bytes;
    CHECK(gathered == W * B_KV);
  }
}

TEST_CASE("model::schedules: pit rejects bad configurations naming key, value and reason") {
  auto err = [](const Scenario& sc) {
    try {
      generate_schedule(sc);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(err(test::scenario_with("pit", 1, {1024}, kColumns, "fwd", Json::object(), 2, 1, 64)),
             Contains("'parallel.granularity'") && Contains("needs"));
  CHECK_THAT(err(pit(1, 4)), Contains("'parallel.granularity' = 4") && Contains("[8, 4096]"));
  CHECK_THAT(err(pit(1, 16, Json{{"kind", "causal"}})), Contains("'workload.mask.kind' = \"causal\"") &&
                                                            Contains("block_sparse"));
  CHECK_THAT(err(pit(3, 16)), Contains("divisible by 3"));
  CHECK_THAT(err(test::scenario_with("pit", 1, {1024}, kColumns, "fwd", Json{{"granularity", 16}, {"tile", 64}}, 2,
                                     1, 64)),
             Contains("'parallel.tile' is not a known key"));
}
