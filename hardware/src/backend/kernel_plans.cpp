// Per-head and gathered (PIT) kernel plans; see kernel_plans.hpp.
#include "kernel_plans.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <limits>
#include <numeric>

namespace cpsim::backend {

namespace kn = cpsim::kernels;

namespace {

constexpr int kTile = kn::kTileRows;

/**
 * Tiles of one side of the rectangles: rows cut at every rectangle boundary and wherever a position starts a
 * layout block (`block` > 0), then every 64 rows. Rows shared by rectangles are tiled once.
 */
std::vector<kn::TileRange> tile_rows(const std::vector<SegmentRows>& segs, bool q_side, int64_t block) {
  auto row0 = [&](const SegmentRows& s) { return q_side ? s.q_row : s.k_row; };
  auto range = [&](const SegmentRows& s) { return q_side ? s.q : s.k; };
  std::vector<int64_t> cuts;
  for (const auto& s : segs) {
    const TokenRange r = range(s);
    if (r.stride != 1)
      throw UserError("a per-head layout over strided token ranges is not planned by the GPU backend");
    cuts.push_back(row0(s));
    cuts.push_back(row0(s) + r.size());
    if (block > 0)
      for (int64_t p = (r.begin / block + 1) * block; p < r.end; p += block)
        cuts.push_back(row0(s) + p - r.begin);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<kn::TileRange> tiles;
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const int64_t a = cuts[c], b = cuts[c + 1];
    const SegmentRows* cover = nullptr;
    for (const auto& s : segs)
      if (row0(s) <= a && row0(s) + range(s).size() >= b) {
        if (cover && (s.seq != cover->seq || range(s).begin - row0(s) != range(*cover).begin - row0(*cover)))
          throw UserError("attention rectangles give rows [" + std::to_string(a) + ", " + std::to_string(b) +
                          ") two different token positions");
        cover = &s;
      }
    if (!cover)
      continue;
    for (int64_t r = a; r < b; r += kTile)
      tiles.push_back({r, range(*cover).begin + (r - row0(*cover)), 1, int32_t(std::min<int64_t>(kTile, b - r)), cover->seq});
  }
  return tiles;
}

} // namespace

kn::MaskDesc kernel_mask(const MaskGeometry& g, int n_seqs) {
  kn::MaskDesc m;
  const MaskSpec& s = g.spec();
  switch (s.kind) {
  case MaskKind::FULL: break;
  case MaskKind::CAUSAL: m.causal = true; break;
  case MaskKind::SLIDING_WINDOW:
    m.causal = true;
    m.window = s.window;
    break;
  case MaskKind::BLOCK_SPARSE:
    m.causal = s.causal;
    m.layout_block = s.block;
    for (int q = 0; q < n_seqs; ++q) {
      m.layouts.push_back(g.layout(q).bits);
      m.layout_n_blocks.push_back(g.layout(q).n_blocks);
    }
    break;
  case MaskKind::LAMBDA:
  case MaskKind::SHARED_QUESTION:
  case MaskKind::CAUSAL_BLOCKWISE:
    // DCP's per-row range masks: each row's key intervals spelled out for the kernels (they hold causality too)
    for (int q = 0; q < n_seqs; ++q) {
      const std::vector<int64_t> rows = g.row_key_intervals(q);
      std::vector<int32_t> r(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i] > std::numeric_limits<int32_t>::max())
          throw UserError("'workload.seq_lens[" + std::to_string(q) + "]': a range mask over more than 2^31 " +
                          "positions does not fit the kernels' 32-bit key intervals");
        r[i] = int32_t(rows[i]);
      }
      m.row_ranges.push_back(std::move(r));
    }
    break;
  }
  return m;
}

PlannedKernel per_head_plan(const std::vector<SegmentRows>& segs, const MaskGeometry& g, int head_begin, int head_end) {
  const MaskSpec& spec = g.spec();
  PlannedKernel out;
  out.mask.causal = spec.causal;
  kn::KernelPlan& p = out.plan;
  p.head_slots = head_end - head_begin;
  p.q_tiles = tile_rows(segs, true, spec.block);
  p.k_tiles = tile_rows(segs, false, spec.block);
  const size_t nq = p.q_tiles.size();
  std::vector<std::vector<std::pair<int32_t, bool>>> per(size_t(p.head_slots) * nq);
  for (const auto& s : segs) {
    auto [q0, q1] = kn::tiles_within(p.q_tiles, s.q_row, s.q_row + s.q.size());
    auto [k0, k1] = kn::tiles_within(p.k_tiles, s.k_row, s.k_row + s.k.size());
    for (int h = head_begin; h < head_end; ++h) {
      const BlockLayout& lay = g.layout(s.seq, h);
      for (size_t qi = q0; qi < q1; ++qi) {
        const kn::TileRange& tq = p.q_tiles[qi];
        for (size_t ki = k0; ki < k1; ++ki) {
          const kn::TileRange& tk = p.k_tiles[ki];
          if (!lay.at(tq.pos0 / spec.block, tk.pos0 / spec.block) || (spec.causal && tk.pos0 > tq.last_pos()))
            continue; // each tile lies in one layout block of its side (tile_rows cut them there)
          const bool full = tk.n == kTile && (!spec.causal || tk.last_pos() <= tq.pos0);
          per[size_t(h - head_begin) * nq + qi].push_back({int32_t(ki), full});
        }
      }
    }
  }
  for (auto& e : per) { // two rectangles on one (query tile, key tile) pair would count its keys twice
    std::sort(e.begin(), e.end());
    for (size_t i = 1; i < e.size(); ++i)
      if (e[i].first == e[i - 1].first)
        throw UserError("attention rectangles cover one (query row, key row) pair twice");
  }
  p.fwd = kn::compress_lists(per);
  kn::finish_plan(p);
  return out;
}

namespace {

/** Positions of a tile's packed rows, micro-tile after micro-tile. */
std::vector<int64_t> packed_positions(const GatherLayout::Tile& t) {
  std::vector<int64_t> pos;
  for (const TokenRange& m : t.micro)
    for (int64_t x = m.begin; x < m.end; ++x)
      pos.push_back(x);
  return pos;
}

} // namespace

PlannedKernel gathered_plan(const GatherLayout& gl, int slot, const MaskGeometry& g, int head) {
  const MaskSpec& spec = g.spec();
  const auto& tiles = gl.tiles.at(size_t(slot));
  // lb divides the layout block, the granularity, every fixed tile's start and every micro-tile's start and length:
  // lb consecutive rows of either side then come from one layout block (micro-tiles clipped at a rank's chunk too)
  int64_t lb = std::gcd(gl.granularity, spec.block);
  for (const GatherLayout::Tile& t : tiles) {
    lb = std::gcd(lb, t.fixed_pos);
    for (const TokenRange& m : t.micro)
      lb = std::gcd(lb, std::gcd(m.begin, m.size()));
  }
  PlannedKernel out;
  out.mask.layout_block = lb; // causality, where there is any, is in the per-row key intervals
  kn::KernelPlan& p = out.plan;
  std::vector<std::vector<std::pair<int32_t, bool>>> lists;
  for (size_t sid = 0; sid < tiles.size(); ++sid) {
    const GatherLayout::Tile& t = tiles[sid];
    const BlockLayout& lay = g.layout(t.seq, head);
    // positions of the plan's query rows and key rows, both at 0.. to the kernels
    std::vector<int64_t> fixed(size_t(t.fixed_n));
    for (int64_t i = 0; i < t.fixed_n; ++i)
      fixed[size_t(i)] = t.fixed_pos + i;
    const std::vector<int64_t> packed = packed_positions(t);
    const std::vector<int64_t>& qs = gl.rows ? packed : fixed;
    const std::vector<int64_t>& ks = gl.rows ? fixed : packed;
    const int64_t nq = int64_t(qs.size()), nk = int64_t(ks.size());
    const int64_t q_pad = (nq + kTile - 1) / kTile * kTile; // the kernels' padding rows are covered too (masked)
    const int64_t rows = (q_pad + lb - 1) / lb, cols = std::max<int64_t>(1, (nk + lb - 1) / lb);
    std::vector<uint8_t> bits(size_t(rows * cols), 0);
    for (int64_t r = 0; r * lb < nq; ++r)
      for (int64_t c = 0; c * lb < nk; ++c)
        bits[size_t(r * cols + c)] = lay.at(qs[size_t(r * lb)] / spec.block, ks[size_t(c * lb)] / spec.block) ? 1 : 0;
    // causal: keys are in position order on both sides, so a query row sees a prefix of the key rows
    std::vector<int64_t> key_end(size_t(q_pad), 0);
    std::vector<int32_t> ranges;
    for (int64_t i = 0; i < nq; ++i)
      key_end[size_t(i)] = spec.causal ? std::upper_bound(ks.begin(), ks.end(), qs[size_t(i)]) - ks.begin() : nk;
    if (spec.causal)
      for (int64_t i = 0; i < q_pad; ++i)
        ranges.insert(ranges.end(), {0, int32_t(key_end[size_t(i)]), 0, 0});
    const int32_t seq = int32_t(sid);
    const int64_t q_row0 = gl.rows ? t.packed_row : t.fixed_row, k_row0 = gl.rows ? t.fixed_row : t.packed_row;
    const size_t q_first = p.q_tiles.size(), k_first = p.k_tiles.size();
    for (int64_t o = 0; o < nq; o += kTile)
      p.q_tiles.push_back({q_row0 + o, o, 1, int32_t(std::min<int64_t>(kTile, nq - o)), seq});
    for (int64_t o = 0; o < nk; o += kTile) // every key tile, so that the backward writes 0 as dK, dV of unseen keys
      p.k_tiles.push_back({k_row0 + o, o, 1, int32_t(std::min<int64_t>(kTile, nk - o)), seq});
    for (size_t qi = q_first; qi < p.q_tiles.size(); ++qi) {
      const kn::TileRange& tq = p.q_tiles[qi];
      lists.emplace_back();
      for (size_t ki = k_first; ki < p.k_tiles.size(); ++ki) {
        const kn::TileRange& tk = p.k_tiles[ki];
        bool any = false, full = tk.n == kTile;
        for (int64_t i = tq.pos0; i <= tq.last_pos(); ++i) {
          int64_t seen = 0; // keys of tk row i sees: in layout blocks that are on, before its causal end
          for (int64_t c = tk.pos0 / lb; c <= tk.last_pos() / lb; ++c)
            if (bits[size_t((i / lb) * cols + c)])
              seen += std::max<int64_t>(0, std::min({(c + 1) * lb, tk.last_pos() + 1, key_end[size_t(i)]}) - std::max(c * lb, tk.pos0));
          any = any || seen > 0;
          full = full && seen == tk.n;
        }
        if (any)
          lists.back().push_back({int32_t(ki), full});
      }
    }
    out.mask.layouts.push_back(std::move(bits));
    out.mask.layout_n_blocks.push_back(cols);
    out.mask.row_ranges.push_back(std::move(ranges));
  }
  p.fwd = kn::compress_lists(lists);
  kn::finish_plan(p);
  return out;
}

} // namespace cpsim::backend
