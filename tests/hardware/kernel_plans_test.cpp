// The kernel plans the backend builds itself (per-head layouts, PIT's packed tiles), checked cell by cell on the
// CPU: a cell is computed iff its tiles are listed and, in a partial tile, the kernels' mask (as MaskDesc::visible
// applies it to the tiles' positions) lets it through; that must equal the workload's mask for every head.
#include "kernel_plan_support.hpp"

#include "cpsim/model/micro_tiles.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace cpsim;
using namespace cpsim::backend;
namespace kn = cpsim::kernels;
using namespace cpsim::backend::test_support;

TEST_CASE("per-head plan: every head computes exactly its own layout's visible cells of the rectangles") {
  for (bool causal : {false, true}) {
    Json mask{{"kind", "block_sparse"}, {"block", 64}, {"head_densities", {0.3, 0.6, 0.1}}, {"seed", 4}, {"causal", causal}};
    Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {448}, mask, "fwd", 3, 3, 64));
    const MaskGeometry m(sc.workload);
    // queries [96, 352) at rows 0.., keys [0, 448) held as two slices: [0, 160) at rows 0.., [224, 448) after them
    std::vector<SegmentRows> segs = {{0, 0, 0, {96, 352}, {0, 160}}, {0, 0, 160, {96, 352}, {224, 448}}};
    const PlannedKernel k = per_head_plan(segs, m, 0, 3);
    REQUIRE(k.plan.head_slots == 3);
    CHECK(k.mask.layout_block == 0); // the lists carry the layout; the kernels mask causally only
    check_lists(k.plan);
    for (int h = 0; h < 3; ++h)
      for (int64_t qr = 0; qr < 256; ++qr)
        for (int64_t kr = 0; kr < 384; ++kr) {
          const int64_t qpos = 96 + qr, kpos = kr < 160 ? kr : 224 + (kr - 160);
          auto [qt, i] = tile_of(k.plan.q_tiles, qr);
          auto [kt, j] = tile_of(k.plan.k_tiles, kr);
          REQUIRE(qt < k.plan.q_tiles.size());
          REQUIRE(kt < k.plan.k_tiles.size());
          if (computed(k, h, qt, i, kt, j) != m.visible(0, h, qpos, kpos))
            FAIL("head " << h << " causal " << causal << " query " << qpos << " key " << kpos);
        }
  }
}

TEST_CASE("PIT plan: packed tiles compute exactly the visible cells of each query tile, for every slot") {
  for (bool causal : {false, true})
    for (int64_t g : {16, 32, 64}) {
      Json mask{{"kind", "block_sparse"}, {"block", 32}, {"density", 0.25}, {"seed", 9}, {"causal", causal}};
      Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {640}, mask, "fwd", 2, 1, 64));
      const MaskGeometry m(sc.workload);
      // one slot, query tiles of 128 over [0, 640), key micro-tiles packed one tile after another
      const GatherLayout gl = keys_layout(m, 640, g);
      const PlannedKernel k = gathered_plan(gl, 0, m, 0);
      check_lists(k.plan);
      int64_t checked = 0;
      for (const auto& t : gl.tiles[0]) {
        std::vector<int64_t> key_pos; // original position of each packed row of this tile
        for (const TokenRange& mt : t.micro)
          for (int64_t p = mt.begin; p < mt.end; ++p)
            key_pos.push_back(p);
        for (int64_t qr = t.fixed_row; qr < t.fixed_row + t.fixed_n; ++qr)
          for (size_t x = 0; x < key_pos.size(); ++x) {
            auto [qt, i] = tile_of(k.plan.q_tiles, qr);
            auto [kt, j] = tile_of(k.plan.k_tiles, t.packed_row + int64_t(x));
            REQUIRE(qt < k.plan.q_tiles.size());
            REQUIRE(kt < k.plan.k_tiles.size());
            if (computed(k, 0, qt, i, kt, j) != m.visible(0, t.fixed_pos + (qr - t.fixed_row), key_pos[x]))
              FAIL("g " << g << " causal " << causal << " query " << t.fixed_pos + (qr - t.fixed_row) << " key " << key_pos[x]);
            ++checked;
          }
        // a visible key the gather did not pack would be lost: there is none
        for (int64_t q = t.fixed_pos; q < t.fixed_pos + t.fixed_n; ++q)
          for (int64_t kp = 0; kp < 640; ++kp)
            if (m.visible(0, q, kp) && std::find(key_pos.begin(), key_pos.end(), kp) == key_pos.end())
              FAIL("visible key " << kp << " of query " << q << " is not packed");
      }
      CHECK(checked > 0);
    }
}

TEST_CASE("PIT plan: the kernels' mask takes memory linear in the packed rows, not their square") {
  // a causal 16k sequence with 16-token blocks and micro-tiles: a query tile late in the sequence packs thousands of
  // keys; a square bitmap of the packed positions per tile would take (packed / 16)^2 bytes, gigabytes at 128k
  Json mask{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 2}, {"causal", true}};
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {16384}, mask, "fwd", 2, 1, 64));
  const MaskGeometry m(sc.workload);
  const GatherLayout gl = keys_layout(m, 16384, 16);
  const PlannedKernel k = gathered_plan(gl, 0, m, 0);
  int64_t bytes = 0;
  for (const auto& l : k.mask.layouts)
    bytes += int64_t(l.size());
  for (const auto& r : k.mask.row_ranges)
    bytes += 4 * int64_t(r.size());
  CHECK(k.mask.layout_block == 16);
  CHECK(gl.packed_rows > 500'000); // ~8k keys per query tile on average
  CHECK(bytes < gl.packed_rows);     // (128 / 16) bits per 16 packed keys + 16 bytes per query row
}

TEST_CASE("range masks: the kernels' per-row key intervals compute exactly the workload's visible cells") {
  const std::vector<Json> masks = {
      {{"kind", "lambda"}, {"window", 96}, {"sink", 40}},
      {{"kind", "shared_question"}, {"question_fraction", 0.25}, {"answers", 3}},
      {{"kind", "causal_blockwise"}, {"block", 64}, {"local_blocks", 1}}};
  for (const Json& mask : masks) {
    INFO(mask.dump());
    Scenario sc = test::make_scenario(test::scenario_json("dcp", 1, {448, 200}, mask, "fwd", 2, 2, 64));
    const MaskGeometry m(sc.workload);
    // DCP-like pieces: sequence 0's queries [96, 352) against its keys [0, 160) and [224, 448) held apart, and
    // sequence 1 whole, packed after them
    const std::vector<SegmentRows> segs = {{0, 0, 0, {96, 352}, {0, 160}}, {0, 0, 160, {96, 352}, {224, 448}},
                                           {1, 256, 384, {0, 200}, {0, 200}}};
    const kn::MaskDesc md = kernel_mask(m, 2);
    CHECK_FALSE(md.causal); // the intervals hold causality themselves
    std::vector<kn::PlanSegment> ps;
    for (const auto& s : segs)
      ps.push_back({s.seq, s.q_row, s.q.begin, s.q.stride, s.q.size(), s.k_row, s.k.begin, s.k.stride, s.k.size()});
    const PlannedKernel k{kn::plan_segments(ps, md), md};
    check_lists(k.plan);
    CHECK(k.plan.full_pairs() > 0);
    int64_t visible = 0;
    for (const auto& s : segs)
      for (int64_t qr = 0; qr < s.q.size(); ++qr)
        for (int64_t kr = 0; kr < s.k.size(); ++kr) {
          const int64_t qpos = s.q.begin + qr, kpos = s.k.begin + kr;
          auto [qt, i] = tile_of(k.plan.q_tiles, s.q_row + qr);
          auto [kt, j] = tile_of(k.plan.k_tiles, s.k_row + kr);
          REQUIRE(qt < k.plan.q_tiles.size());
          REQUIRE(kt < k.plan.k_tiles.size());
          const bool want = m.visible(s.seq, qpos, kpos);
          visible += want ? 1 : 0;
          if (computed(k, 0, qt, i, kt, j) != want)
            FAIL("sequence " << s.seq << " query " << qpos << " key " << kpos);
        }
    CHECK(visible == m.cells(0, {96, 352}, {0, 160}) + m.cells(0, {96, 352}, {224, 448}) + m.cells(1, {0, 200}, {0, 200}));
  }
}
