// The kernel plans the backend builds itself (per-head layouts, PIT's packed tiles), checked cell by cell on the
// CPU: a cell is computed iff its tiles are listed and, in a partial tile, the kernels' mask (as MaskDesc::visible
// applies it to the tiles' positions) lets it through; that must equal the workload's mask for every head. PIT along
// query rows is emulated end to end in fp64 from the backend's own tables (gather, packed plans, scatter-merge).
#include "../../hardware/src/backend/gather_tables.hpp"
#include "../../hardware/src/backend/kernel_plans.hpp"

#include "cpsim/model/micro_tiles.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

using namespace cpsim;
using namespace cpsim::backend;
namespace kn = cpsim::kernels;

namespace {

/** What the kernels compute for (q tile qt, query i of it) x (k tile kt, key j of it) under slot `slot`. */
bool computed(const PlannedKernel& k, int slot, size_t qt, int64_t i, size_t kt, int64_t j) {
  const kn::KernelPlan& p = k.plan;
  const size_t item = size_t(slot) * p.q_tiles.size() + qt;
  for (int32_t e = p.fwd.offsets[item]; e < p.fwd.offsets[item + 1]; ++e) {
    if (size_t(p.fwd.idx[size_t(e)]) != kt)
      continue;
    const kn::TileRange &tq = p.q_tiles[qt], &tk = p.k_tiles[kt];
    if (j >= tk.n || i >= tq.n)
      return false;
    if (e - p.fwd.offsets[item] < p.fwd.n_full[item])
      return true;
    return k.mask.visible(tq.seq, tq.pos(i), tk.pos(j));
  }
  return false;
}

/** The tile and offset holding buffer row `row` on one side. */
std::pair<size_t, int64_t> tile_of(const std::vector<kn::TileRange>& t, int64_t row) {
  for (size_t x = 0; x < t.size(); ++x)
    if (row >= t[x].row0 && row < t[x].row0 + t[x].n)
      return {x, row - t[x].row0};
  return {t.size(), 0};
}

void check_lists(const kn::KernelPlan& p) {
  int64_t fwd = 0, bwd = 0;
  for (int32_t c : p.fwd.offsets)
    fwd = c;
  for (int32_t c : p.bwd.offsets)
    bwd = c;
  CHECK(fwd == bwd); // the backward lists are the forward ones transposed
  CHECK(p.q_order.size() == p.q_tiles.size());
  CHECK(p.k_order.size() == p.k_tiles.size());
}

} // namespace

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
      GatherLayout gl;
      gl.granularity = g;
      gl.slot_heads = {-1};
      gl.tiles.resize(1);
      for (const GatheredTile& t : gathered_micro_tiles(m, 0, 0, {0, 640}, {0, 640}, 128, g, GatherAxis::KEYS)) {
        GatherLayout::Tile x;
        x.fixed_pos = t.fixed.begin;
        x.fixed_row = t.fixed.begin;
        x.fixed_n = t.fixed.size();
        x.packed_row = gl.packed_rows;
        x.micro = t.micro;
        gl.packed_rows += t.gathered();
        gl.tiles[0].push_back(x);
      }
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
  GatherLayout gl;
  gl.granularity = 16;
  gl.slot_heads = {-1};
  gl.tiles.resize(1);
  for (const GatheredTile& t : gathered_micro_tiles(m, 0, 0, {0, 16384}, {0, 16384}, 128, 16, GatherAxis::KEYS)) {
    GatherLayout::Tile x;
    x.fixed_pos = x.fixed_row = t.fixed.begin;
    x.fixed_n = t.fixed.size();
    x.packed_row = gl.packed_rows;
    x.micro = t.micro;
    gl.packed_rows += t.gathered();
    gl.tiles[0].push_back(x);
  }
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

namespace {

/** A deterministic value per (tensor, sequence, position, head, element) in [-1, 1). */
double value_of(int tensor, int seq, int64_t pos, int head, int d) {
  uint64_t x = (uint64_t(tensor) << 56) ^ (uint64_t(seq) << 48) ^ (uint64_t(pos) << 20) ^ (uint64_t(head) << 10) ^ uint64_t(d);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb3fe1a85ec53ULL;
  x ^= x >> 33;
  return double(x >> 11) / double(1ULL << 53) * 2.0 - 1.0;
}

const Op& labelled(const RankProgram& p, const std::string& prefix) {
  for (const Op& op : p.ops)
    if (op.label.rfind(prefix, 0) == 0)
      return op;
  FAIL("no op '" << prefix << "'");
  throw;
}

TokenSlice token_of_row(const BufferPlacement& b, int64_t row) {
  for (const TokenSlice& s : b.tokens) {
    if (row < s.range.size())
      return {s.seq, {s.range.at(row), s.range.at(row) + 1}};
    row -= s.range.size();
  }
  FAIL("row " << row << " beyond '" << b.name << "'");
  throw;
}

} // namespace

TEST_CASE("PIT along query rows: gather, packed plans and scatter-merge compute exact attention (fp64 emulation)") {
  // The whole forward pipeline the backend runs, emulated on the CPU from its own tables: the device's index build
  // (k-th set flag -> micro-tile id), the gather's row copies, the kernels' listed tiles and partial-tile mask (as
  // MaskDesc::visible applies it), the per-row LSE merge home. The result must be attention under the workload's mask.
  const int D = 64;
  const Json uniform{{"kind", "block_sparse"}, {"block", 32}, {"density", 0.3}, {"seed", 3}};
  const Json causal{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 4}, {"causal", true}};
  const Json per_head{{"kind", "block_sparse"}, {"block", 64}, {"head_densities", {0.2, 0.6}}, {"seed", 5}, {"causal", true}};
  for (const Json& mask : {uniform, causal, per_head})
    for (int cp : {1, 2})
      for (int64_t g : {16, 48}) {
        INFO(mask.dump() << " cp " << cp << " g " << g);
        const int heads = 2, kv_heads = mask.contains("head_densities") ? 2 : 1, per = heads / kv_heads;
        Json j = test::scenario_json("pit", cp, {320, 192}, mask, "fwd_bwd", heads, kv_heads, D);
        j["parallel"]["granularity"] = g;
        j["parallel"]["axis"] = "rows";
        const Scenario sc = test::make_scenario(j);
        const Schedule s = generate_schedule(sc);
        const ExecPlan plan = make_exec_plan(s, sc.workload);
        const MaskGeometry m(sc.workload);
        const double scale = 1.0 / std::sqrt(double(D));
        for (const RankExecPlan& rp : plan.ranks) {
          const RankProgram& prog = s.ranks[size_t(rp.rank)];
          const Op &gather = labelled(prog, "fwd gather"), &attn = labelled(prog, "fwd attn"), &merge = labelled(prog, "fwd scatter-merge");
          const GatherLayout& gl = rp.gathers.at(gather.id);
          REQUIRE(gl.rows);
          const BufferPlacement &q = rp.buffers[size_t(gl.src[0])], &kv = rp.buffers[size_t(rp.launches.at(attn.id).front().k)];
          // the index as the device builds it, then each packed row's source row
          const GatherEntries e = gather_entries(gl, rp, sc.workload);
          std::vector<int64_t> packed_src(size_t(gl.packed_rows), -1);
          std::vector<int> packed_head(size_t(gl.packed_rows), -1);
          int64_t entry = 0;
          for (size_t item = 0; item < e.flag_off.size(); ++item)
            for (int32_t c = 0; c < e.n_cand[item]; ++c)
              if (e.flags[size_t(e.flag_off[item] + c)]) {
                const int64_t first = std::max((e.first_cand[item] + c) * g, e.lo[size_t(entry)]);
                const int64_t rows = std::min((e.first_cand[item] + c + 1) * g, e.hi[size_t(entry)]) - first;
                for (int64_t x = 0; x < rows; ++x) {
                  int64_t& slot = packed_src[size_t(e.dst_row[size_t(entry)] + x)];
                  REQUIRE(slot == -1); // every packed row written once
                  slot = e.src_row0[size_t(entry)] + first + x;
                  packed_head[size_t(e.dst_row[size_t(entry)] + x)] = e.head[size_t(entry)];
                }
                ++entry;
              }
          REQUIRE(entry == gl.entries);
          CHECK(std::find(packed_src.begin(), packed_src.end(), -1) == packed_src.end());
          // partial (O, LSE) per packed row and head, from each slot's plan
          std::vector<std::vector<double>> part_o(size_t(gl.packed_rows * gl.row_heads), std::vector<double>(D, 0.0));
          std::vector<double> part_lse(size_t(gl.packed_rows * gl.row_heads), -INFINITY);
          for (size_t slot = 0; slot < gl.slot_heads.size(); ++slot) {
            const std::vector<int> hs = gl.slot_heads[slot] >= 0 ? std::vector<int>{gl.slot_heads[slot]} : attn.head_list();
            const PlannedKernel k = gathered_plan(gl, int(slot), m, hs.front());
            check_lists(k.plan);
            for (size_t hi = 0; hi < hs.size(); ++hi) {
              const int h = hs[hi];
              for (size_t qt = 0; qt < k.plan.q_tiles.size(); ++qt) {
                const kn::TileRange& tq = k.plan.q_tiles[qt];
                for (int64_t i = 0; i < tq.n; ++i) {
                  const int64_t pr = tq.row0 + i;
                  const TokenSlice qtok = token_of_row(q, packed_src[size_t(pr)]);
                  if (gl.slot_heads[slot] >= 0)
                    CHECK(packed_head[size_t(pr)] == q.head_pos(h));
                  std::vector<std::pair<double, int64_t>> scores;
                  for (size_t kt = 0; kt < k.plan.k_tiles.size(); ++kt)
                    for (int64_t jj = 0; jj < k.plan.k_tiles[kt].n; ++jj)
                      if (computed(k, 0, qt, i, kt, jj)) {
                        const TokenSlice ktok = token_of_row(kv, k.plan.k_tiles[kt].row0 + jj);
                        REQUIRE(ktok.seq == qtok.seq);
                        double sc_ = 0;
                        for (int d = 0; d < D; ++d)
                          sc_ += value_of(0, qtok.seq, qtok.range.begin, h, d) * value_of(1, ktok.seq, ktok.range.begin, h / per, d);
                        scores.push_back({sc_ * scale, ktok.range.begin});
                      }
                  if (scores.empty())
                    continue;
                  double mx = -INFINITY, sum = 0;
                  for (auto& [v, kp] : scores)
                    mx = std::max(mx, v);
                  for (auto& [v, kp] : scores)
                    sum += std::exp(v - mx);
                  const size_t at = size_t(pr * gl.row_heads + (gl.row_heads == 1 ? 0 : hi));
                  part_lse[at] = mx + std::log(sum);
                  for (auto& [v, kp] : scores)
                    for (int d = 0; d < D; ++d)
                      part_o[at][size_t(d)] += std::exp(v - part_lse[at]) * value_of(2, qtok.seq, kp, h / per, d);
                }
              }
            }
          }
          // merged home by the scatter-merge's units; compared with attention under the mask
          const ForwardMerge& fm = rp.forward_merges.at(merge.id);
          REQUIRE(fm.kind == ForwardMerge::PACKED);
          const BufferPlacement& o = rp.buffers[size_t(fm.out)];
          const UnitSources u = packed_merge_units(fm, rp, sc.workload);
          REQUIRE(int64_t(u.unit_elem.size()) == o.rows * (u.unit_heads == 1 ? o.heads : 1));
          int64_t checked = 0;
          for (size_t un = 0; un < u.unit_elem.size(); ++un)
            for (int hh = 0; hh < u.unit_heads; ++hh) {
              const int64_t row = u.unit_elem[un] / o.width;
              const int h = o.head_ids[size_t((u.unit_elem[un] % o.width) / D + hh)];
              const TokenSlice tok = token_of_row(o, row);
              double mx = -INFINITY, sum = 0;
              for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c)
                mx = std::max(mx, part_lse[size_t(u.rows[size_t(c)] * gl.row_heads + hh)]);
              for (int64_t c = u.begin[un]; c < u.begin[un + 1] && std::isfinite(mx); ++c)
                sum += std::exp(part_lse[size_t(u.rows[size_t(c)] * gl.row_heads + hh)] - mx);
              const double L = std::isfinite(mx) ? mx + std::log(sum) : -INFINITY;
              // the reference: every visible key of the sequence
              double rmx = -INFINITY, rsum = 0;
              std::vector<std::pair<double, int64_t>> ref;
              for (int64_t kp = 0; kp < sc.workload.seq_lens[size_t(tok.seq)]; ++kp)
                if (m.visible(tok.seq, h, tok.range.begin, kp)) {
                  double v = 0;
                  for (int d = 0; d < D; ++d)
                    v += value_of(0, tok.seq, tok.range.begin, h, d) * value_of(1, tok.seq, kp, h / per, d);
                  ref.push_back({v * scale, kp});
                  rmx = std::max(rmx, v * scale);
                }
              for (auto& [v, kp] : ref)
                rsum += std::exp(v - rmx);
              const double RL = ref.empty() ? -INFINITY : rmx + std::log(rsum);
              INFO("rank " << rp.rank << " seq " << tok.seq << " pos " << tok.range.begin << " head " << h);
              if (!std::isfinite(RL)) {
                CHECK_FALSE(std::isfinite(L));
                continue;
              }
              REQUIRE(L == Approx(RL).epsilon(1e-12));
              for (int d = 0; d < D; ++d) {
                double got = 0, want = 0;
                for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c) {
                  const size_t at = size_t(u.rows[size_t(c)] * gl.row_heads + hh);
                  got += std::exp(part_lse[at] - L) * part_o[at][size_t(d)];
                }
                for (auto& [v, kp] : ref)
                  want += std::exp(v - RL) * value_of(2, tok.seq, kp, h / per, d);
                REQUIRE(got == Approx(want).margin(1e-12));
              }
              ++checked;
            }
          CHECK(checked > 0);
        }
      }
}
