// CTA classes of an attention op (see kernel_grid.hpp). Full, causal and sliding-window masks find each tile row's
// full and touched key tiles by bisection, like MaskGeometry::tiles, and count cells only in the few partly masked
// tiles; block-sparse layouts and range masks are walked tile by tile. Column counts come from the same walk (a
// difference array over each row's full interval), so key-major grids cost no second pass.
#include "cpsim/model/kernel_grid.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <map>
#include <tuple>

namespace cpsim {

std::string to_string(GridKind g) {
  switch (g) {
  case GridKind::Q_PER_HEAD: return "q_per_head";
  case GridKind::Q_PER_KV_HEAD: return "q_per_kv_head";
  case GridKind::K_PER_HEAD: return "k_per_head";
  case GridKind::K_PER_KV_HEAD: return "k_per_kv_head";
  }
  return "?";
}

bool grid_kind_from_string(const std::string& s, GridKind& out) {
  for (GridKind g : {GridKind::Q_PER_HEAD, GridKind::Q_PER_KV_HEAD, GridKind::K_PER_HEAD, GridKind::K_PER_KV_HEAD})
    if (to_string(g) == s) {
      out = g;
      return true;
    }
  return false;
}

bool key_major(GridKind g) { return g == GridKind::K_PER_HEAD || g == GridKind::K_PER_KV_HEAD; }

namespace {

struct TileStats {
  double full = 0, partial = 0, visible = 0;
  void add(const TileStats& o, double times = 1) {
    full += times * o.full;
    partial += times * o.partial;
    visible += times * o.visible;
  }
};

struct SegmentTiles {
  std::vector<TileStats> rows, cols;
};

/** Number of j in [0, n) with pred(j) true, for a predicate that is true on a prefix. */
template <class Pred> int64_t prefix_count(int64_t n, Pred pred) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pred(mid))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/** Tiles of one segment for one head (-1: the head-agnostic mask), per query-tile row and per key-tile column. */
SegmentTiles segment_tiles(const MaskGeometry& m, int head, const AttnSegment& s, KernelTile t) {
  const TokenRange q = s.q, k = s.k;
  const int64_t nq = (q.size() + t.q - 1) / t.q, nk = (k.size() + t.k - 1) / t.k;
  SegmentTiles out;
  out.rows.resize(size_t(nq));
  out.cols.resize(size_t(nk));
  if (nq == 0 || nk == 0)
    return out;
  const double area = double(t.q) * double(t.k);
  auto q_tile = [&](int64_t i) { return sub_range(q, i * t.q, std::min(q.size(), (i + 1) * t.q)); };
  auto k_tile = [&](int64_t j) { return sub_range(k, j * t.k, std::min(k.size(), (j + 1) * t.k)); };
  auto cells = [&](TokenRange a, TokenRange b) {
    return head < 0 ? m.cells(s.seq, a, b) : m.cells(s.seq, head, a, b);
  };
  std::vector<double> col_full_diff(size_t(nk) + 1, 0.0);
  // one tile (i, j): full when every cell is visible, else partial with its visible share of the nominal area
  auto classify = [&](int64_t i, TokenRange qt, int64_t j) {
    const TokenRange kt = k_tile(j);
    const int64_t c = cells(qt, kt);
    if (c <= 0)
      return;
    TileStats& r = out.rows[size_t(i)];
    TileStats& col = out.cols[size_t(j)];
    if (c == qt.size() * kt.size()) {
      r.full += 1;
      col.full += 1;
    } else {
      r.partial += 1;
      col.partial += 1;
      r.visible += double(c) / area;
      col.visible += double(c) / area;
    }
  };
  const MaskKind kind = m.spec().kind;
  const bool banded = head < 0 && (kind == MaskKind::FULL || kind == MaskKind::CAUSAL || kind == MaskKind::SLIDING_WINDOW);
  for (int64_t i = 0; i < nq; ++i) {
    const TokenRange qt = q_tile(i);
    if (!banded) {
      // block layouts and range masks: every candidate tile counted (range masks see no key after the query)
      const int64_t hi = kind == MaskKind::BLOCK_SPARSE && !m.spec().causal
                             ? nk
                             : prefix_count(nk, [&](int64_t j) { return k.at(j * t.k) <= qt.last(); });
      for (int64_t j = 0; j < hi; ++j)
        classify(i, qt, j);
      continue;
    }
    int64_t lo = 0, hi = nk, full_lo = 0, full_hi = nk;
    if (kind != MaskKind::FULL) {
      // key j visible from query i iff i - w < j <= i (w infinite for causal): touched tiles [lo, hi), full ones
      // [full_lo, full_hi), found on the tiles' first and last keys
      hi = prefix_count(nk, [&](int64_t j) { return k.at(j * t.k) <= qt.last(); });
      full_hi = prefix_count(nk, [&](int64_t j) { return k_tile(j).last() <= qt.begin; });
      if (kind == MaskKind::SLIDING_WINDOW) {
        const int64_t w = m.spec().window;
        lo = prefix_count(nk, [&](int64_t j) { return k_tile(j).last() <= qt.begin - w; });
        full_lo = prefix_count(nk, [&](int64_t j) { return k.at(j * t.k) <= qt.last() - w; });
      }
    }
    const int64_t g0 = std::max(full_lo, lo), g1 = std::min(full_hi, hi);
    if (g1 > g0) {
      out.rows[size_t(i)].full += double(g1 - g0);
      col_full_diff[size_t(g0)] += 1;
      col_full_diff[size_t(g1)] -= 1;
    }
    for (int64_t j = lo; j < hi; ++j) {
      if (j >= g0 && j < g1) {
        j = g1 - 1;
        continue;
      }
      classify(i, qt, j);
    }
  }
  double run = 0;
  for (int64_t j = 0; j < nk; ++j) {
    run += col_full_diff[size_t(j)];
    out.cols[size_t(j)].full += run;
  }
  return out;
}

using ClassKey = std::tuple<double, double, double, int>;

void add_class(std::map<ClassKey, int64_t>& classes, const TileStats& s, int heads, int64_t count) {
  if (s.full + s.partial <= 0 || count <= 0)
    return;
  classes[{s.full, s.partial, s.visible, heads}] += count;
}

} // namespace

std::vector<CtaClass> cta_classes(const Op& op, const Workload& w, const MaskGeometry& m, KernelTile tile,
                                  GridKind grid) {
  CPSIM_ASSERT(op.kind == OpKind::ATTENTION, "CTA classes of a non-attention op");
  CPSIM_ASSERT(tile.q > 0 && tile.k > 0, "kernel tile sizes must be positive");
  const bool by_key = key_major(grid);
  const bool per_kv = grid == GridKind::Q_PER_KV_HEAD || grid == GridKind::K_PER_KV_HEAD;
  const std::vector<int> heads = op.head_list();
  const int per_group = std::max(1, w.heads / std::max(1, w.kv_heads));
  // query heads of the op per KV group, in group order
  std::map<int, std::vector<int>> groups;
  for (int h : heads)
    groups[h / per_group].push_back(h);
  // segments that share their CTAs: same sequence and the same query (or key) range
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, std::vector<const AttnSegment*>> shared;
  for (const auto& s : op.segments) {
    const TokenRange r = by_key ? s.k : s.q;
    shared[{s.seq, r.begin, r.end, r.stride}].push_back(&s);
  }
  auto stats_of = [&](const std::vector<const AttnSegment*>& segs, int head) {
    std::vector<TileStats> sum;
    for (const AttnSegment* s : segs) {
      SegmentTiles st = segment_tiles(m, head, *s, tile);
      const auto& v = by_key ? st.cols : st.rows;
      if (sum.empty())
        sum.resize(v.size());
      for (size_t i = 0; i < v.size(); ++i)
        sum[i].add(v[i]);
    }
    return sum;
  };
  std::map<ClassKey, int64_t> classes;
  for (const auto& [key, segs] : shared) {
    if (!m.per_head()) {
      const std::vector<TileStats> st = stats_of(segs, -1);
      for (const TileStats& s : st) {
        if (!per_kv) {
          add_class(classes, s, 1, int64_t(heads.size()));
          continue;
        }
        for (const auto& [g, hs] : groups) {
          TileStats x;
          x.add(s, double(hs.size()));
          add_class(classes, x, int(hs.size()), 1);
        }
      }
      continue;
    }
    // per-head layouts: each head its own tiles
    std::map<int, std::vector<TileStats>> by_head;
    for (int h : heads)
      by_head[h] = stats_of(segs, h);
    const size_t n = by_head.begin()->second.size();
    for (size_t i = 0; i < n; ++i) {
      if (!per_kv) {
        for (int h : heads)
          add_class(classes, by_head[h][i], 1, 1);
        continue;
      }
      for (const auto& [g, hs] : groups) {
        TileStats x;
        for (int h : hs)
          x.add(by_head[h][i]);
        add_class(classes, x, int(hs.size()), 1);
      }
    }
  }
  std::vector<CtaClass> out;
  for (const auto& [k, count] : classes)
    out.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k), count});
  return out;
}

} // namespace cpsim
