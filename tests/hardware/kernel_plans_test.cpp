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
#include <array>
#include <cmath>
#include <map>

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

namespace {

/** Source row (in the gather's first source) and head column of every packed row, as the device's gather writes
 *  them: the index built from the flags (k-th set flag -> micro-tile id), each entry clipped to its span. */
std::vector<std::pair<int64_t, int>> packed_sources(const GatherLayout& gl, const RankExecPlan& rp, const Workload& w) {
  const GatherEntries e = gather_entries(gl, rp, w);
  std::vector<std::pair<int64_t, int>> out(size_t(gl.packed_rows), {-1, -1});
  int64_t entry = 0;
  for (size_t item = 0; item < e.flag_off.size(); ++item)
    for (int32_t c = 0; c < e.n_cand[item]; ++c)
      if (e.flags[size_t(e.flag_off[item] + c)]) {
        const int64_t id = e.first_cand[item] + c;
        const int64_t first = std::max(id * gl.granularity, e.lo[size_t(entry)]);
        const int64_t end = std::min((id + 1) * gl.granularity, e.hi[size_t(entry)]);
        for (int64_t x = first; x < end; ++x) {
          auto& slot = out[size_t(e.dst_row[size_t(entry)] + x - first)];
          REQUIRE(slot.first == -1); // every packed row written once
          slot = {e.src_row0[size_t(entry)] + x, e.head[size_t(entry)]};
        }
        ++entry;
      }
  REQUIRE(entry == gl.entries);
  return out;
}

} // namespace

TEST_CASE("PIT backward, both axes: gather, packed plans, in-place and scattered gradients give exact dQ, dK, dV (fp64)") {
  // The backward the backend runs, emulated from its tables: P = exp(S - LSE) and dS = P (dP - Delta) on every cell
  // the kernels compute (listed tiles, partial tiles masked as MaskDesc::visible applies it), dQ into its q rows or
  // packed rows summed home by the SCATTER, dK and dV into packed rows summed home (columns) or in place (rows), the
  // ranks' dK, dV summed (the reduce-scatter). The result must be attention's gradients under the workload's mask.
  const int D = 64, E = 8; // buffers of head_dim 64; the emulation's vectors use 8 of its elements (scores scaled by 1/sqrt(64))
  const Json uniform{{"kind", "block_sparse"}, {"block", 32}, {"density", 0.3}, {"seed", 6}};
  const Json causal{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 7}, {"causal", true}};
  const Json per_head{{"kind", "block_sparse"}, {"block", 64}, {"head_densities", {0.3, 0.6}}, {"seed", 8}, {"causal", true}};
  for (const char* axis : {"columns", "rows"})
    for (const Json& mask : {uniform, causal, per_head})
      for (int cp : {1, 2}) {
        const int64_t g = cp == 1 ? 16 : 48;
        INFO(axis << " " << mask.dump() << " cp " << cp << " g " << g);
        const bool ph = mask.contains("head_densities");
        const int heads = 2, kv_heads = ph && std::string(axis) == "rows" ? 2 : 1, per = heads / kv_heads;
        Json j = test::scenario_json("pit", cp, {320, 192}, mask, "fwd_bwd", heads, kv_heads, D);
        j["parallel"]["granularity"] = g;
        j["parallel"]["axis"] = axis;
        const Scenario sc = test::make_scenario(j);
        const Schedule s = generate_schedule(sc);
        const ExecPlan plan = make_exec_plan(s, sc.workload);
        const MaskGeometry m(sc.workload);
        const double scale = 1.0 / std::sqrt(double(D));
        auto Q = [](int sq, int64_t p, int h, int d) { return value_of(0, sq, p, h, d); };
        auto K = [](int sq, int64_t p, int kh, int d) { return value_of(1, sq, p, kh, d); };
        auto V = [](int sq, int64_t p, int kh, int d) { return value_of(2, sq, p, kh, d); };
        auto dO = [](int sq, int64_t p, int h, int d) { return value_of(3, sq, p, h, d); };
        std::map<std::array<int64_t, 4>, double> scores;
        auto score = [&](int sq, int64_t qp, int64_t kp, int h) {
          auto [it, fresh] = scores.try_emplace({sq, qp, kp, h}, 0.0);
          if (fresh) {
            for (int d = 0; d < E; ++d)
              it->second += Q(sq, qp, h, d) * K(sq, kp, h / per, d);
            it->second *= scale;
          }
          return it->second;
        };
        // reference forward (O, LSE, Delta) and gradients, cell by cell over the mask
        std::map<std::array<int64_t, 3>, double> lse, delta; // (seq, pos, head)
        std::map<std::array<int64_t, 3>, std::vector<double>> ref_dq, ref_dk, ref_dv; // dk, dv: (seq, pos, KV head)
        for (int sq = 0; sq < 2; ++sq) {
          const int64_t n = sc.workload.seq_lens[size_t(sq)];
          for (int h = 0; h < heads; ++h)
            for (int64_t qp = 0; qp < n; ++qp) {
              double mx = -INFINITY, sum = 0;
              for (int64_t kp = 0; kp < n; ++kp)
                if (m.visible(sq, h, qp, kp))
                  mx = std::max(mx, score(sq, qp, kp, h));
              if (!std::isfinite(mx))
                continue;
              std::vector<double> o(E, 0.0);
              for (int64_t kp = 0; kp < n; ++kp)
                if (m.visible(sq, h, qp, kp))
                  sum += std::exp(score(sq, qp, kp, h) - mx);
              const double L = mx + std::log(sum);
              double dl = 0;
              for (int64_t kp = 0; kp < n; ++kp)
                if (m.visible(sq, h, qp, kp))
                  for (int d = 0; d < E; ++d)
                    o[size_t(d)] += std::exp(score(sq, qp, kp, h) - L) * V(sq, kp, h / per, d);
              for (int d = 0; d < E; ++d)
                dl += dO(sq, qp, h, d) * o[size_t(d)];
              lse[{sq, qp, h}] = L;
              delta[{sq, qp, h}] = dl;
              auto& dq = ref_dq[{sq, qp, h}];
              dq.assign(E, 0.0);
              for (int64_t kp = 0; kp < n; ++kp) {
                if (!m.visible(sq, h, qp, kp))
                  continue;
                const double pr = std::exp(score(sq, qp, kp, h) - L);
                double dp = 0;
                for (int d = 0; d < E; ++d)
                  dp += dO(sq, qp, h, d) * V(sq, kp, h / per, d);
                const double ds = pr * (dp - dl);
                auto& dk = ref_dk[{sq, kp, h / per}];
                auto& dv = ref_dv[{sq, kp, h / per}];
                dk.resize(E, 0.0);
                dv.resize(E, 0.0);
                for (int d = 0; d < E; ++d) {
                  dq[size_t(d)] += scale * ds * K(sq, kp, h / per, d);
                  dk[size_t(d)] += scale * ds * Q(sq, qp, h, d);
                  dv[size_t(d)] += pr * dO(sq, qp, h, d);
                }
              }
            }
        }
        std::map<std::array<int64_t, 3>, std::vector<double>> got_dk, got_dv; // summed over ranks
        int64_t dq_checked = 0;
        for (const RankExecPlan& rp : plan.ranks) {
          const RankProgram& prog = s.ranks[size_t(rp.rank)];
          const Op& gather = labelled(prog, "bwd gather");
          const Op& attn = labelled(prog, "bwd attn");
          const GatherLayout& gl = rp.gathers.at(gather.id);
          const ScatterPlan& sp = rp.scatters.begin()->second;
          REQUIRE(sp.gather == gather.id);
          const auto src = packed_sources(gl, rp, sc.workload);
          const BufferPlacement& q = rp.buffer("q");
          const BufferPlacement& kvb = rp.buffer(cp > 1 ? "kv_gathered_bwd" : "kv");
          const BufferPlacement& gsrc = rp.buffers[size_t(gl.src[0])];
          const int64_t RH = gl.row_heads;
          // gradient rows the kernels write: dQ (q rows, or packed rows), dK and dV (packed rows, or kv rows)
          std::map<std::pair<int64_t, int>, std::vector<double>> dq_rows, dk_rows, dv_rows; // (row, head or KV head)
          for (size_t slot = 0; slot < gl.slot_heads.size(); ++slot) {
            const std::vector<int> hs = gl.slot_heads[slot] >= 0 ? std::vector<int>{gl.slot_heads[slot]} : attn.head_list();
            const PlannedKernel k = gathered_plan(gl, int(slot), m, hs.front());
            for (int h : hs)
              for (size_t qt = 0; qt < k.plan.q_tiles.size(); ++qt)
                for (int64_t i = 0; i < k.plan.q_tiles[qt].n; ++i) {
                  const int64_t qrow = k.plan.q_tiles[qt].row0 + i;
                  const TokenSlice qtok = token_of_row(gl.rows ? gsrc : q, gl.rows ? src[size_t(qrow)].first : qrow);
                  const int sq = qtok.seq;
                  const int64_t qp = qtok.range.begin;
                  for (size_t kt = 0; kt < k.plan.k_tiles.size(); ++kt)
                    for (int64_t jj = 0; jj < k.plan.k_tiles[kt].n; ++jj) {
                      if (!computed(k, 0, qt, i, kt, jj))
                        continue;
                      const int64_t krow = k.plan.k_tiles[kt].row0 + jj;
                      const TokenSlice ktok = token_of_row(gl.rows ? kvb : gsrc, gl.rows ? krow : src[size_t(krow)].first);
                      REQUIRE(ktok.seq == sq);
                      const int64_t kp = ktok.range.begin;
                      REQUIRE(m.visible(sq, h, qp, kp));
                      const double pr = std::exp(score(sq, qp, kp, h) - lse.at({sq, qp, h}));
                      double dp = 0;
                      for (int d = 0; d < E; ++d)
                        dp += dO(sq, qp, h, d) * V(sq, kp, h / per, d);
                      const double ds = pr * (dp - delta.at({sq, qp, h}));
                      // a packed row holds the slot's head (per-head) or every head of its source side by side
                      const int qh = gl.rows && RH == 1 ? 0 : h, kh = !gl.rows && RH == 1 ? 0 : h / per;
                      auto& dq = dq_rows[{qrow, qh}];
                      auto& dk = dk_rows[{krow, kh}];
                      auto& dv = dv_rows[{krow, kh}];
                      dq.resize(E, 0.0);
                      dk.resize(E, 0.0);
                      dv.resize(E, 0.0);
                      for (int d = 0; d < E; ++d) {
                        dq[size_t(d)] += scale * ds * K(sq, kp, h / per, d);
                        dk[size_t(d)] += scale * ds * Q(sq, qp, h, d);
                        dv[size_t(d)] += pr * dO(sq, qp, h, d);
                      }
                    }
                }
          }
          // the SCATTER's units: each home unit the sum of its packed rows
          const UnitSources u = scatter_units(sp, rp, sc.workload);
          const BufferPlacement& home = rp.buffers[size_t(sp.dst)];
          auto home_of = [&](size_t un, int hh) { // (row, head index in the home row) of unit un's hh-th head
            const int64_t e = u.unit_elem[un] + int64_t(hh) * D;
            return std::pair<int64_t, int>{e / home.width, int((e % home.width) / D)};
          };
          std::map<std::pair<int64_t, int>, std::vector<double>> dq_home = gl.rows ? decltype(dq_rows){} : dq_rows;
          std::map<std::pair<int64_t, int>, std::vector<double>> dk_home = gl.rows ? dk_rows : decltype(dk_rows){};
          std::map<std::pair<int64_t, int>, std::vector<double>> dv_home = gl.rows ? dv_rows : decltype(dv_rows){};
          for (size_t un = 0; un < u.unit_elem.size(); ++un)
            for (int hh = 0; hh < u.unit_heads; ++hh) {
              const auto [row, hp] = home_of(un, hh);
              const int packed_head = RH == 1 ? 0 : hp;
              for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c) {
                const std::pair<int64_t, int> from{u.rows[size_t(c)], packed_head};
                const std::pair<int64_t, int> to{row, home.head_ids[size_t(hp)]};
                auto add = [&](const auto& rows, auto& into) {
                  if (auto it = rows.find(from); it != rows.end()) {
                    auto& x = into[to];
                    x.resize(E, 0.0);
                    for (int d = 0; d < E; ++d)
                      x[size_t(d)] += it->second[size_t(d)];
                  }
                };
                if (gl.rows) {
                  add(dq_rows, dq_home);
                } else {
                  add(dk_rows, dk_home);
                  add(dv_rows, dv_home);
                }
              }
            }
          // dQ of this rank's queries; dK, dV of the gathered keys, summed over ranks as the reduce-scatter does
          for (auto& [key, v] : dq_home) {
            const TokenSlice t = token_of_row(q, key.first);
            const auto it = ref_dq.find({t.seq, t.range.begin, key.second});
            for (int d = 0; d < E; ++d)
              REQUIRE(v[size_t(d)] == Approx(it == ref_dq.end() ? 0.0 : it->second[size_t(d)]).margin(1e-12));
            ++dq_checked;
          }
          for (auto* pair : {&dk_home, &dv_home})
            for (auto& [key, v] : *pair) {
              const TokenSlice t = token_of_row(kvb, key.first);
              auto& into = (pair == &dk_home ? got_dk : got_dv)[{t.seq, t.range.begin, key.second}];
              into.resize(E, 0.0);
              for (int d = 0; d < E; ++d)
                into[size_t(d)] += v[size_t(d)];
            }
        }
        CHECK(dq_checked == int64_t(ref_dq.size())); // every query with a visible key got its dQ, once
        for (auto* pair : {&ref_dk, &ref_dv}) {
          const auto& got = pair == &ref_dk ? got_dk : got_dv;
          CHECK(got.size() == pair->size());
          for (auto& [key, want] : *pair) {
            INFO("seq " << key[0] << " key " << key[1] << " KV head " << key[2]);
            REQUIRE(got.count(key) == 1);
            for (int d = 0; d < E; ++d)
              REQUIRE(got.at(key)[size_t(d)] == Approx(want[size_t(d)]).margin(1e-12));
          }
        }
      }
}
