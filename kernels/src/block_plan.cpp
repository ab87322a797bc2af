// The planner: tiles both sides of a set of rectangles and lists, per query tile, the key tiles
// worth computing (empty ones dropped, fully visible ones first so the kernel masks only the rest).
// Classification is conservative: "full" and "empty" are only claimed when certain, anything else
// is "partial" and masked per element on the device, which is always correct.
#include "cpsim/kernels/block_plan.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>

namespace cpsim::kernels {

bool MaskDesc::visible(int seq, int64_t i, int64_t j) const {
  if (causal && j > i)
    return false;
  if (window > 0 && i - j >= window)
    return false;
  if (size_t(seq) < row_ranges.size() && !row_ranges[size_t(seq)].empty()) {
    const int32_t* r = &row_ranges[size_t(seq)][size_t(4 * i)];
    if (!((j >= r[0] && j < r[1]) || (j >= r[2] && j < r[3])))
      return false;
  }
  if (layout_block > 0) {
    const int64_t nb = layout_n_blocks[size_t(seq)];
    return layouts[size_t(seq)][size_t((i / layout_block) * nb + j / layout_block)] != 0;
  }
  return true;
}

int64_t KernelPlan::full_pairs() const {
  int64_t s = 0;
  for (int32_t f : fwd.n_full)
    s += f;
  return s;
}

int64_t KernelPlan::partial_pairs() const { return int64_t(fwd.idx.size()) - full_pairs(); }

int64_t BlockLists::seq_block_base(int seq) const {
  int64_t base = 0;
  for (int s = 0; s < seq; ++s)
    base += blocks(s);
  return base;
}

namespace {

enum class Cover { EMPTY, PARTIAL, FULL };

/** UserError unless the mask's layouts cover every position `last_pos[seq]` may reach. */
void check_mask(const MaskDesc& m, const std::vector<int64_t>& last_pos) {
  if (m.window < 0)
    throw UserError("mask window " + std::to_string(m.window) + ": must be >= 0 (0: no window)");
  for (size_t s = 0; s < m.row_ranges.size() && s < last_pos.size(); ++s) {
    const auto& r = m.row_ranges[s];
    if (r.empty() || last_pos[s] < 0)
      continue;
    if (r.size() % 4 != 0 || int64_t(r.size() / 4) <= last_pos[s])
      throw UserError("mask row ranges of sequence " + std::to_string(s) + ": " + std::to_string(r.size()) +
                      " values, but 4 per query position up to " + std::to_string(last_pos[s]) + " are needed");
  }
  if (m.layout_block <= 0)
    return;
  if (m.layouts.size() != m.layout_n_blocks.size())
    throw UserError("mask layouts: " + std::to_string(m.layouts.size()) + " bitmaps but " +
                    std::to_string(m.layout_n_blocks.size()) + " block counts");
  for (size_t s = 0; s < m.layouts.size(); ++s)
    if (int64_t(m.layouts[s].size()) != m.layout_n_blocks[s] * m.layout_n_blocks[s])
      throw UserError("mask layout of sequence " + std::to_string(s) + ": " + std::to_string(m.layouts[s].size()) +
                      " bits for " + std::to_string(m.layout_n_blocks[s]) + " x " + std::to_string(m.layout_n_blocks[s]) +
                      " blocks");
  for (size_t s = 0; s < last_pos.size(); ++s) {
    if (last_pos[s] < 0)
      continue;
    if (s >= m.layouts.size() || last_pos[s] >= m.layout_n_blocks[s] * m.layout_block)
      throw UserError("mask layout of sequence " + std::to_string(s) + ": missing or too small for position " +
                      std::to_string(last_pos[s]) + " (block " + std::to_string(m.layout_block) + ")");
  }
}

/** 2-D prefix sums of each sequence's layout, so a rectangle of blocks is counted in O(1). */
struct LayoutSums {
  std::vector<std::vector<int32_t>> sums;
  std::vector<int64_t> nb;
  explicit LayoutSums(const MaskDesc& m) : nb(m.layout_n_blocks) {
    if (m.layout_block <= 0)
      return;
    for (size_t s = 0; s < m.layouts.size(); ++s) {
      const int64_t n = nb[s];
      std::vector<int32_t> ps(size_t((n + 1) * (n + 1)), 0);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < n; ++c)
          ps[size_t((r + 1) * (n + 1) + c + 1)] = ps[size_t(r * (n + 1) + c + 1)] + ps[size_t((r + 1) * (n + 1) + c)] -
                                                  ps[size_t(r * (n + 1) + c)] + (m.layouts[s][size_t(r * n + c)] ? 1 : 0);
      sums.push_back(std::move(ps));
    }
  }
  int64_t count(int seq, int64_t r0, int64_t r1, int64_t c0, int64_t c1) const { // inclusive block ranges
    const auto& ps = sums[size_t(seq)];
    const int64_t w = nb[size_t(seq)] + 1;
    return ps[size_t((r1 + 1) * w + c1 + 1)] - ps[size_t(r0 * w + c1 + 1)] - ps[size_t((r1 + 1) * w + c0)] + ps[size_t(r0 * w + c0)];
  }
};

/** `tile` is the extent a fully visible key tile has; a shorter one (end of a range) needs bounds masking. */
Cover classify(const TileRange& q, const TileRange& k, const MaskDesc& m, const LayoutSums* sums, int tile = kTileRows) {
  const int64_t qmin = q.pos0, qmax = q.last_pos(), kmin = k.pos0, kmax = k.last_pos();
  bool full = k.n == tile;
  if (m.causal) {
    if (kmin > qmax)
      return Cover::EMPTY;
    full = full && kmax <= qmin;
  }
  if (m.window > 0) {
    if (qmin - kmax >= m.window)
      return Cover::EMPTY;
    full = full && qmax - kmin < m.window;
  }
  if (size_t(q.seq) < m.row_ranges.size() && !m.row_ranges[size_t(q.seq)].empty()) {
    // row by row (a tile has at most a block's rows): empty when no row's interval meets the key span, full when
    // every row's interval holds all of it
    const std::vector<int32_t>& rr = m.row_ranges[size_t(q.seq)];
    bool any = false, all = true;
    for (int32_t t = 0; t < q.n; ++t) {
      const int32_t* r = &rr[size_t(4 * q.pos(t))];
      const bool meets = (r[0] <= kmax && kmin < r[1]) || (r[2] <= kmax && kmin < r[3]);
      const bool holds = (r[0] <= kmin && kmax < r[1]) || (r[2] <= kmin && kmax < r[3]);
      any = any || meets;
      all = all && holds;
    }
    if (!any)
      return Cover::EMPTY;
    full = full && all;
  }
  if (sums && m.layout_block > 0) {
    const int64_t b = m.layout_block;
    const int64_t r0 = qmin / b, r1 = qmax / b, c0 = kmin / b, c1 = kmax / b;
    const int64_t on = sums->count(q.seq, r0, r1, c0, c1);
    if (on == 0)
      return Cover::EMPTY;
    full = full && on == (r1 - r0 + 1) * (c1 - c0 + 1);
  }
  return full ? Cover::FULL : Cover::PARTIAL;
}

/** Splits the row intervals of one side at every segment boundary and tiles the pieces. */
std::vector<TileRange> tile_side(const std::vector<PlanSegment>& segs, bool q_side) {
  auto row0 = [&](const PlanSegment& s) { return q_side ? s.q_row0 : s.k_row0; };
  auto n = [&](const PlanSegment& s) { return q_side ? s.q_n : s.k_n; };
  auto pos_of = [&](const PlanSegment& s, int64_t row) {
    return (q_side ? s.q_pos0 : s.k_pos0) + (row - row0(s)) * (q_side ? s.q_stride : s.k_stride);
  };
  std::vector<int64_t> cuts;
  for (const auto& s : segs) {
    cuts.push_back(row0(s));
    cuts.push_back(row0(s) + n(s));
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<TileRange> tiles;
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const int64_t a = cuts[c], b = cuts[c + 1];
    const PlanSegment* cover = nullptr;
    for (const auto& s : segs) {
      if (row0(s) > a || row0(s) + n(s) < b)
        continue;
      if (!cover) {
        cover = &s;
        continue;
      }
      const bool same = s.seq == cover->seq && pos_of(s, a) == pos_of(*cover, a) && pos_of(s, b - 1) == pos_of(*cover, b - 1);
      if (!same)
        throw UserError(std::string("attention segments: ") + (q_side ? "query" : "key") + " rows [" + std::to_string(a) +
                        ", " + std::to_string(b) + ") are given two different token positions by two segments");
    }
    if (!cover)
      continue;
    const int64_t stride = q_side ? cover->q_stride : cover->k_stride;
    for (int64_t r = a; r < b; r += kTileRows)
      tiles.push_back({r, pos_of(*cover, r), stride, int32_t(std::min<int64_t>(kTileRows, b - r)), cover->seq});
  }
  return tiles;
}

} // namespace

std::pair<size_t, size_t> tiles_within(const std::vector<TileRange>& t, int64_t r0, int64_t r1) {
  auto lo = std::lower_bound(t.begin(), t.end(), r0, [](const TileRange& x, int64_t r) { return x.row0 < r; });
  auto hi = std::lower_bound(t.begin(), t.end(), r1, [](const TileRange& x, int64_t r) { return x.row0 < r; });
  return {size_t(lo - t.begin()), size_t(hi - t.begin())};
}

TileLists compress_lists(std::vector<std::vector<std::pair<int32_t, bool>>>& per_item) {
  TileLists l;
  l.offsets.reserve(per_item.size() + 1);
  for (auto& e : per_item) {
    std::sort(e.begin(), e.end(), [](auto& a, auto& b) { return a.second != b.second ? a.second : a.first < b.first; });
    int32_t nf = 0;
    for (auto& [i, f] : e) {
      l.idx.push_back(i);
      nf += f ? 1 : 0;
    }
    l.n_full.push_back(nf);
    l.offsets.push_back(int32_t(l.idx.size()));
  }
  return l;
}

namespace {

/** Backward lists: for every (slot, k tile) the q tiles whose forward lists hold it, with the same full flag. */
TileLists transpose_lists(const KernelPlan& p) {
  const size_t nq = p.q_tiles.size(), nk = p.k_tiles.size();
  std::vector<std::vector<std::pair<int32_t, bool>>> per(size_t(p.head_slots) * nk);
  for (int s = 0; s < p.head_slots; ++s)
    for (size_t q = 0; q < nq; ++q) {
      const size_t item = size_t(s) * nq + q;
      for (int32_t e = p.fwd.offsets[item]; e < p.fwd.offsets[item + 1]; ++e)
        per[size_t(s) * nk + size_t(p.fwd.idx[size_t(e)])].push_back({int32_t(q), e - p.fwd.offsets[item] < p.fwd.n_full[item]});
    }
  return compress_lists(per);
}

/** Tiles sorted by decreasing total list length over the slots (ties: tile order). */
std::vector<int32_t> longest_first(const TileLists& l, size_t n_tiles, int slots) {
  std::vector<int64_t> work(n_tiles, 0);
  for (int s = 0; s < slots; ++s)
    for (size_t t = 0; t < n_tiles; ++t)
      work[t] += l.count(int64_t(size_t(s) * n_tiles + t));
  std::vector<int32_t> order(n_tiles);
  for (size_t t = 0; t < n_tiles; ++t)
    order[t] = int32_t(t);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return work[size_t(a)] > work[size_t(b)]; });
  return order;
}

} // namespace

void finish_plan(KernelPlan& p) {
  p.bwd = transpose_lists(p);
  p.q_order = longest_first(p.fwd, p.q_tiles.size(), p.head_slots);
  p.k_order = longest_first(p.bwd, p.k_tiles.size(), p.head_slots);
}

KernelPlan plan_segments(const std::vector<PlanSegment>& segs, const MaskDesc& mask) {
  for (const auto& s : segs)
    if (s.q_n < 0 || s.k_n < 0 || s.q_stride < 1 || s.k_stride < 1)
      throw UserError("attention segment of sequence " + std::to_string(s.seq) + ": negative size or stride < 1");
  std::vector<int64_t> last_pos;
  for (const auto& s : segs) {
    if (s.seq < 0 || s.q_pos0 < 0 || s.k_pos0 < 0)
      throw UserError("attention segment: sequence " + std::to_string(s.seq) + " or a position is negative");
    if (size_t(s.seq) >= last_pos.size())
      last_pos.resize(size_t(s.seq) + 1, -1);
    auto& lp = last_pos[size_t(s.seq)];
    if (s.q_n > 0)
      lp = std::max(lp, s.q_pos0 + (s.q_n - 1) * s.q_stride);
    if (s.k_n > 0)
      lp = std::max(lp, s.k_pos0 + (s.k_n - 1) * s.k_stride);
  }
  check_mask(mask, last_pos);
  KernelPlan p;
  p.q_tiles = tile_side(segs, true);
  p.k_tiles = tile_side(segs, false);
  const LayoutSums sums(mask);
  std::vector<std::vector<std::pair<int32_t, bool>>> per(p.q_tiles.size());
  for (const auto& s : segs) {
    auto [q0, q1] = tiles_within(p.q_tiles, s.q_row0, s.q_row0 + s.q_n);
    auto [k0, k1] = tiles_within(p.k_tiles, s.k_row0, s.k_row0 + s.k_n);
    for (size_t qi = q0; qi < q1; ++qi)
      for (size_t ki = k0; ki < k1; ++ki) {
        const Cover c = classify(p.q_tiles[qi], p.k_tiles[ki], mask, &sums);
        if (c != Cover::EMPTY)
          per[qi].push_back({int32_t(ki), c == Cover::FULL});
      }
  }
  for (size_t qi = 0; qi < per.size(); ++qi) {
    auto& e = per[qi];
    std::sort(e.begin(), e.end());
    for (size_t i = 1; i < e.size(); ++i)
      if (e[i].first == e[i - 1].first)
        throw UserError("attention segments: query rows from " + std::to_string(p.q_tiles[qi].row0) + " and key rows from " +
                        std::to_string(p.k_tiles[size_t(e[i].first)].row0) + " are covered by two segments");
  }
  p.fwd = compress_lists(per);
  finish_plan(p);
  return p;
}

BlockLists block_lists_from_mask(const MaskDesc& mask, const std::vector<int64_t>& seq_lens, int block, int head_slots) {
  if (block != 64 && block != 128)
    throw UserError("block size " + std::to_string(block) + ": the kernels take blocks of 64 or 128");
  if (head_slots < 1)
    throw UserError("head_slots " + std::to_string(head_slots) + ": must be at least 1");
  std::vector<int64_t> last_pos;
  for (int64_t len : seq_lens) {
    if (len < 0)
      throw UserError("sequence length " + std::to_string(len) + ": must be >= 0");
    last_pos.push_back(len - 1);
  }
  check_mask(mask, last_pos);
  BlockLists b;
  b.block = block;
  b.head_slots = head_slots;
  b.seq_lens = seq_lens;
  const LayoutSums sums(mask);
  for (size_t s = 0; s < seq_lens.size(); ++s) {
    const int64_t nb = b.blocks(int(s));
    for (int64_t qb = 0; qb < nb; ++qb) {
      std::vector<int32_t> full, partial;
      const TileRange q{0, qb * block, 1, int32_t(std::min<int64_t>(block, seq_lens[s] - qb * block)), int32_t(s)};
      for (int64_t kb = 0; kb < nb; ++kb) {
        const TileRange k{0, kb * block, 1, int32_t(std::min<int64_t>(block, seq_lens[s] - kb * block)), int32_t(s)};
        const Cover c = classify(q, k, mask, &sums, block);
        if (c == Cover::FULL)
          full.push_back(int32_t(kb));
        else if (c == Cover::PARTIAL)
          partial.push_back(int32_t(kb));
      }
      for (int slot = 0; slot < head_slots; ++slot) {
        b.full.push_back(full);
        b.partial.push_back(partial);
      }
    }
  }
  return b;
}

BlockLists transpose(const BlockLists& b) {
  BlockLists t = b;
  for (auto& v : t.full)
    v.clear();
  for (auto& v : t.partial)
    v.clear();
  for (size_t s = 0; s < b.seq_lens.size(); ++s)
    for (int slot = 0; slot < b.head_slots; ++slot)
      for (int64_t qb = 0; qb < b.blocks(int(s)); ++qb) {
        const size_t i = size_t(b.index(int(s), slot, qb));
        for (int32_t kb : b.full[i])
          t.full[size_t(b.index(int(s), slot, kb))].push_back(int32_t(qb));
        for (int32_t kb : b.partial[i])
          t.partial[size_t(b.index(int(s), slot, kb))].push_back(int32_t(qb));
      }
  return t;
}

KernelPlan plan_block_lists(const BlockLists& b, const MaskDesc& mask) {
  if (b.block % kTileRows != 0)
    throw UserError("block size " + std::to_string(b.block) + ": must be a multiple of the kernel tile (64)");
  MaskDesc rule = mask;
  rule.layout_block = 0; // the lists are the layout
  std::vector<int64_t> last_pos;
  for (int64_t n : b.seq_lens)
    last_pos.push_back(n - 1);
  check_mask(rule, last_pos);
  KernelPlan p;
  p.head_slots = b.head_slots;
  const int per = b.block / kTileRows;
  std::vector<std::vector<int32_t>> first_tile(b.seq_lens.size()); // per sequence, per block: first tile index
  int64_t row = 0;
  for (size_t s = 0; s < b.seq_lens.size(); ++s) {
    for (int64_t blk = 0; blk < b.blocks(int(s)); ++blk) {
      first_tile[s].push_back(int32_t(p.q_tiles.size()));
      for (int t = 0; t < per; ++t) {
        const int64_t pos = blk * b.block + t * kTileRows;
        if (pos < b.seq_lens[s])
          p.q_tiles.push_back({row + pos, pos, 1, int32_t(std::min<int64_t>(kTileRows, b.seq_lens[s] - pos)), int32_t(s)});
      }
    }
    row += b.seq_lens[s];
  }
  p.k_tiles = p.q_tiles;
  std::vector<std::vector<std::pair<int32_t, bool>>> lists(size_t(b.head_slots) * p.q_tiles.size());
  for (size_t s = 0; s < b.seq_lens.size(); ++s)
    for (int slot = 0; slot < b.head_slots; ++slot)
      for (int64_t qb = 0; qb < b.blocks(int(s)); ++qb) {
        const size_t li = size_t(b.index(int(s), slot, qb));
        auto add = [&](int32_t kb, bool block_full) {
          if (kb < 0 || kb >= b.blocks(int(s)))
            throw UserError("block list of sequence " + std::to_string(s) + ", query block " + std::to_string(qb) +
                            ": key block " + std::to_string(kb) + " is out of range");
          for (int32_t qt = first_tile[s][size_t(qb)], qe = qt + per; qt < qe && qt < int32_t(p.q_tiles.size()) && p.q_tiles[size_t(qt)].seq == int32_t(s) && p.q_tiles[size_t(qt)].pos0 < (qb + 1) * b.block; ++qt)
            for (int32_t kt = first_tile[s][size_t(kb)], ke = kt + per; kt < ke && kt < int32_t(p.k_tiles.size()) && p.k_tiles[size_t(kt)].seq == int32_t(s) && p.k_tiles[size_t(kt)].pos0 < (kb + 1) * b.block; ++kt) {
              const TileRange& q = p.q_tiles[size_t(qt)];
              const TileRange& k = p.k_tiles[size_t(kt)];
              Cover c = block_full ? (k.n == kTileRows ? Cover::FULL : Cover::PARTIAL) : classify(q, k, rule, nullptr);
              if (c != Cover::EMPTY)
                lists[size_t(slot) * p.q_tiles.size() + size_t(qt)].push_back({kt, c == Cover::FULL});
            }
        };
        for (int32_t kb : b.full[li])
          add(kb, true);
        for (int32_t kb : b.partial[li])
          add(kb, false);
      }
  p.fwd = compress_lists(lists);
  finish_plan(p);
  return p;
}

std::vector<uint8_t> random_layout(int64_t n_blocks, double density, uint64_t seed, bool causal) {
  if (!(density > 0.0 && density <= 1.0))
    throw UserError("layout density " + std::to_string(density) + ": must be in (0, 1]");
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> bits(size_t(n_blocks * n_blocks), 0);
  // the lower triangle (with diagonal) holds the candidates of a causal layout
  for (int64_t r = 0; r < n_blocks; ++r)
    for (int64_t c = 0; c < n_blocks; ++c) {
      if (causal && c > r)
        continue;
      const double u = double(rng() >> 11) * 0x1.0p-53;
      bits[size_t(r * n_blocks + c)] = (r == c || u < density) ? 1 : 0;
    }
  return bits;
}

} // namespace cpsim::kernels
