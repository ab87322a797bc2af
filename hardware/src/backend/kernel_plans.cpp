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

PlannedKernel gathered_plan(const GatherLayout& gl, int slot, const MaskGeometry& g, int head) {
  const MaskSpec& spec = g.spec();
  const int64_t lb = std::gcd(gl.granularity, spec.block); // a synthetic block lies in one micro-tile and one layout block
  PlannedKernel out;
  out.mask.causal = spec.causal;
  out.mask.layout_block = lb;
  kn::KernelPlan& p = out.plan;
  std::vector<std::vector<std::pair<int32_t, bool>>> lists;
  const auto& tiles = gl.tiles.at(size_t(slot));
  for (size_t sid = 0; sid < tiles.size(); ++sid) {
    const GatherLayout::Tile& t = tiles[sid];
    const BlockLayout& lay = g.layout(t.seq, head);
    // packed keys: the micro-tiles before the query tile's band (all before its queries), then the band
    int64_t packed = 0, before = 0, band_start = -1;
    for (const TokenRange& m : t.micro) {
      if (spec.causal && band_start < 0 && m.end > t.q_pos)
        band_start = m.begin, before = packed;
      packed += m.size();
    }
    // synthetic query positions: after the packed keys that precede the tile, consecutive with the band
    int64_t q_syn0 = spec.causal && band_start >= 0 ? before + (t.q_pos - band_start) : 0;
    if (spec.causal && band_start < 0) // every packed key precedes the tile's queries
      q_syn0 = (packed + lb - 1) / lb * lb;
    if (q_syn0 % lb != 0 || (!spec.causal && t.q_pos % lb != 0))
      throw UserError("PIT gather: query tile at " + std::to_string(t.q_pos) + " is not aligned to " + std::to_string(lb) +
                      " tokens (gcd of granularity and layout block); the kernels cannot mask its packed tiles");
    // the forward kernel looks the mask up for the padding rows of a short query tile too: cover them
    const int64_t q_end = q_syn0 + (t.q_n + kTile - 1) / kTile * kTile;
    const int64_t nb = (std::max(q_end, packed) + lb - 1) / lb;
    std::vector<uint8_t> bits(size_t(nb * nb), 0);
    std::vector<int64_t> key_pos(size_t((packed + lb - 1) / lb)); // original position of each synthetic key block
    for (int64_t off = 0; const TokenRange& m : t.micro) {
      for (int64_t x = 0; x < m.size(); x += lb)
        key_pos[size_t((off + x) / lb)] = m.begin + x;
      off += m.size();
    }
    for (int64_t qb = q_syn0 / lb; qb * lb < q_syn0 + t.q_n; ++qb) {
      const int64_t qpos = t.q_pos + qb * lb - q_syn0;
      for (size_t kb = 0; kb < key_pos.size(); ++kb)
        bits[size_t(qb * nb + int64_t(kb))] = lay.at(qpos / spec.block, key_pos[kb] / spec.block) ? 1 : 0;
    }
    const int32_t seq = int32_t(sid);
    const size_t q_first = p.q_tiles.size(), k_first = p.k_tiles.size();
    for (int64_t o = 0; o < t.q_n; o += kTile)
      p.q_tiles.push_back({t.q_row + o, q_syn0 + o, 1, int32_t(std::min<int64_t>(kTile, t.q_n - o)), seq});
    for (int64_t o = 0; o < packed; o += kTile)
      p.k_tiles.push_back({t.packed_row + o, o, 1, int32_t(std::min<int64_t>(kTile, packed - o)), seq});
    for (size_t qi = q_first; qi < p.q_tiles.size(); ++qi) {
      const kn::TileRange& tq = p.q_tiles[qi];
      lists.emplace_back();
      for (size_t ki = k_first; ki < p.k_tiles.size(); ++ki) {
        const kn::TileRange& tk = p.k_tiles[ki];
        if (spec.causal && tk.pos0 > tq.last_pos())
          continue;
        bool full = tk.n == kTile && (!spec.causal || tk.last_pos() <= tq.pos0);
        bool any = false;
        for (int64_t qb = tq.pos0 / lb; qb <= tq.last_pos() / lb; ++qb)
          for (int64_t kb = tk.pos0 / lb; kb <= tk.last_pos() / lb; ++kb) {
            const bool on = bits[size_t(qb * nb + kb)] != 0;
            any = any || on;
            full = full && on;
          }
        if (any)
          lists.back().push_back({int32_t(ki), full});
      }
    }
    out.mask.layouts.push_back(std::move(bits));
    out.mask.layout_n_blocks.push_back(nb);
  }
  p.fwd = kn::compress_lists(lists);
  kn::finish_plan(p);
  return out;
}

} // namespace cpsim::backend
