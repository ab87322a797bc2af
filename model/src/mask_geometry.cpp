// Cell and tile counting for every mask kind. Closed forms avoid per-row loops so that planning
// 512k-token sequences stays cheap; block-sparse counts walk the layout blocks a rectangle touches.
// Strided (stripe) ranges use a floor-sum closed form, so they cost no more than contiguous ones.
#include "cpsim/model/mask_geometry.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

namespace detail {
/** sum_{q=a}^{b-1} clamp(q + off, lo, hi), for lo <= hi. */
int64_t sum_clamped(int64_t a, int64_t b, int64_t off, int64_t lo, int64_t hi) {
  if (b <= a)
    return 0;
  // q + off <= lo  <=>  q <= lo - off ; q + off >= hi <=> q >= hi - off
  int64_t q_lo_end = std::clamp(lo - off + 1, a, b); // [a, q_lo_end) take lo
  int64_t q_hi_begin = std::clamp(hi - off, q_lo_end, b); // [q_hi_begin, b) take hi
  int64_t s = (q_lo_end - a) * lo + (b - q_hi_begin) * hi;
  // middle: q in [q_lo_end, q_hi_begin): value q + off, an arithmetic series
  int64_t n = q_hi_begin - q_lo_end;
  if (n > 0)
    s += n * off + (q_lo_end + q_hi_begin - 1) * n / 2;
  return s;
}
} // namespace detail

namespace {
using detail::sum_clamped;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/** Causal cells in queries [qa,qb) x keys [ka,kb): key j visible iff j <= i. */
int64_t causal_cells(TokenRange q, TokenRange k) {
  return sum_clamped(q.begin, q.end, 1, k.begin, k.end) - q.size() * k.begin;
}

int64_t window_cells(TokenRange q, TokenRange k, int64_t w) {
  return sum_clamped(q.begin, q.end, 1, k.begin, k.end) - sum_clamped(q.begin, q.end, 1 - w, k.begin, k.end);
}

TokenRange intersect(TokenRange a, TokenRange b) {
  TokenRange r{std::max(a.begin, b.begin), std::min(a.end, b.end)};
  if (r.end < r.begin)
    r.end = r.begin;
  return r;
}

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/** sum_{i=0}^{n-1} floor((a*i + b) / m) for a, b >= 0, m > 0 (the classic Euclid-like floor sum). */
int64_t floor_sum(int64_t n, int64_t m, int64_t a, int64_t b) {
  __extension__ typedef unsigned __int128 u128; // a*n*n can pass 2^63 for long sequences before the divisions
  u128 ans = 0, N = u128(n), M = u128(m), A = u128(a), B = u128(b);
  while (true) {
    if (A >= M) {
      ans += N * (N - 1) / 2 * (A / M);
      A %= M;
    }
    if (B >= M) {
      ans += N * (B / M);
      B %= M;
    }
    u128 y_max = A * N + B;
    if (y_max < M)
      break;
    N = y_max / M;
    B = y_max % M;
    std::swap(M, A);
  }
  return static_cast<int64_t>(ans);
}

/**
 * Pairs (query q_i, key k_j) of two progressions with k_j <= q_i - off: the causal count (off = 0)
 * and, by difference, the sliding-window count. For each query the visible keys are a prefix of
 * the key progression whose length is clamp(floor((q_i - off - k_0) / k.stride) + 1, 0, |k|).
 */
int64_t keys_at_or_before(TokenRange q, TokenRange k, int64_t off) {
  const int64_t nq = q.size(), nk = k.size();
  if (nq <= 0 || nk <= 0)
    return 0;
  const int64_t base = k.begin + off - q.begin; // x_i = q.stride * i - base
  const int64_t i_a = std::clamp<int64_t>(ceil_div(base, q.stride), 0, nq);
  const int64_t i_b = std::clamp<int64_t>(ceil_div(base + (nk - 1) * k.stride, q.stride), i_a, nq);
  int64_t s = (nq - i_b) * nk;
  const int64_t n = i_b - i_a;
  if (n > 0)
    s += floor_sum(n, k.stride, q.stride, q.stride * i_a - base) + n;
  return s;
}

/** The positions of a progression that fall in the contiguous window [lo, hi). */
TokenRange clip(TokenRange r, int64_t lo, int64_t hi) {
  int64_t i0 = std::clamp<int64_t>(ceil_div(lo - r.begin, r.stride), 0, r.size());
  int64_t i1 = std::clamp<int64_t>(ceil_div(hi - r.begin, r.stride), i0, r.size());
  return sub_range(r, i0, i1);
}

} // namespace

TokenRange sub_range(TokenRange r, int64_t i0, int64_t i1) {
  if (i1 <= i0)
    return {r.at(i0), r.at(i0), r.stride};
  return {r.at(i0), r.at(i1 - 1) + 1, r.stride};
}

BlockLayout random_block_layout(int64_t seq_len, int64_t block, double density, uint64_t seed, int seq_index,
                                bool causal) {
  BlockLayout l;
  l.block = block;
  l.n_blocks = (seq_len + block - 1) / block;
  l.bits.assign(static_cast<size_t>(l.n_blocks * l.n_blocks), 0);
  for (int64_t qb = 0; qb < l.n_blocks; ++qb)
    for (int64_t kb = 0; kb < l.n_blocks; ++kb) {
      if (causal && kb > qb)
        continue;
      uint64_t h = splitmix64(seed ^ splitmix64((uint64_t(seq_index) << 42) ^ (uint64_t(qb) << 21) ^ uint64_t(kb)));
      double u = double(h >> 11) * 0x1.0p-53;
      if (qb == kb || u < density)
        l.bits[static_cast<size_t>(qb * l.n_blocks + kb)] = 1;
    }
  return l;
}

namespace {
BlockLayout layout_from_rows(const Json& rows, const std::string& where, int64_t seq_len, int64_t block) {
  BlockLayout l;
  l.block = block;
  l.n_blocks = (seq_len + block - 1) / block;
  l.bits.assign(static_cast<size_t>(l.n_blocks * l.n_blocks), 0);
  if (!rows.is_array() || static_cast<int64_t>(rows.size()) != l.n_blocks)
    throw UserError(where + " must list " + std::to_string(l.n_blocks) + " query blocks (sequence of " +
                    std::to_string(seq_len) + " tokens, block " + std::to_string(block) + ")");
  for (int64_t qb = 0; qb < l.n_blocks; ++qb) {
    const Json& ks = rows[static_cast<size_t>(qb)];
    if (!ks.is_array())
      throw UserError(where + "[" + std::to_string(qb) + "] must be an array of key-block indices");
    for (const Json& kj : ks) {
      if (!kj.is_number_integer() || kj.get<int64_t>() < 0 || kj.get<int64_t>() >= l.n_blocks)
        throw UserError(where + "[" + std::to_string(qb) + "] holds " + json_value_text(kj) +
                        ": key-block indices must be integers in [0, " + std::to_string(l.n_blocks) + ")");
      l.bits[static_cast<size_t>(qb * l.n_blocks + kj.get<int64_t>())] = 1;
    }
  }
  return l;
}

/** Block-wise OR of the heads' layouts: what a head-agnostic count must cover. */
BlockLayout union_layout(const std::vector<BlockLayout>& heads) {
  BlockLayout u = heads.front();
  for (const BlockLayout& l : heads)
    for (size_t i = 0; i < u.bits.size(); ++i)
      u.bits[i] |= l.bits[i];
  return u;
}
} // namespace

LayoutFile load_block_layouts(const std::string& path, const std::vector<int64_t>& seq_lens, int64_t block,
                              int heads) {
  Json j = load_json_file(path);
  JsonObjectReader r(j, "layout file '" + path + "'");
  int64_t file_block = r.get_int("block", 1);
  if (file_block != block)
    r.fail("block", "differs from workload.mask.block = " + std::to_string(block));
  const bool per_head = r.has("head_layouts");
  if (per_head == r.has("layouts"))
    r.fail("layouts", "needs exactly one of 'layouts' (per sequence) or 'head_layouts' (per sequence and head)");
  const std::string key = per_head ? "head_layouts" : "layouts";
  const Json& layouts = r.raw(key);
  if (!layouts.is_array() || layouts.size() != seq_lens.size())
    r.fail(key, "must be an array with one entry per sequence (" + std::to_string(seq_lens.size()) + ")");
  r.finish();
  LayoutFile out;
  for (size_t s = 0; s < seq_lens.size(); ++s) {
    std::string where = path + ": " + key + "[" + std::to_string(s) + "]";
    if (!per_head) {
      out.per_seq.push_back(layout_from_rows(layouts[s], where, seq_lens[s], block));
      continue;
    }
    if (!layouts[s].is_array() || static_cast<int>(layouts[s].size()) != heads)
      throw UserError(where + " must list one layout per query head (workload.heads = " + std::to_string(heads) + ")");
    std::vector<BlockLayout> hl;
    for (int h = 0; h < heads; ++h)
      hl.push_back(layout_from_rows(layouts[s][size_t(h)], where + "[" + std::to_string(h) + "]", seq_lens[s], block));
    out.per_seq.push_back(union_layout(hl));
    out.per_head.push_back(std::move(hl));
  }
  return out;
}

MaskGeometry::MaskGeometry(const Workload& w) : spec_(w.mask), seq_lens_(w.seq_lens) {
  if (is_range_mask(spec_.kind))
    for (size_t s = 0; s < seq_lens_.size(); ++s)
      pieces_.push_back(detail::range_mask_pieces(spec_, seq_lens_[s], int(s)));
  if (spec_.kind != MaskKind::BLOCK_SPARSE)
    return;
  if (!spec_.layout_file.empty()) {
    LayoutFile f = load_block_layouts(spec_.layout_file, seq_lens_, spec_.block, w.heads);
    layouts_ = std::move(f.per_seq);
    head_layouts_ = std::move(f.per_head);
  } else if (!spec_.head_densities.empty()) {
    // head h draws from its own seed, so changing one head's density leaves the others' layouts
    for (size_t s = 0; s < seq_lens_.size(); ++s) {
      std::vector<BlockLayout> hl;
      for (size_t h = 0; h < spec_.head_densities.size(); ++h)
        hl.push_back(random_block_layout(seq_lens_[s], spec_.block, spec_.head_densities[h],
                                         splitmix64(spec_.seed + 0x51ed27 * (h + 1)), int(s), spec_.causal));
      layouts_.push_back(union_layout(hl));
      head_layouts_.push_back(std::move(hl));
    }
  } else {
    for (size_t s = 0; s < seq_lens_.size(); ++s)
      layouts_.push_back(random_block_layout(seq_lens_[s], spec_.block, spec_.density, spec_.seed, int(s), spec_.causal));
  }
}

std::vector<int64_t> MaskGeometry::row_key_intervals(int seq) const {
  CPSIM_ASSERT(is_range_mask(spec_.kind), "row_key_intervals of a mask that is not a range mask");
  return detail::range_mask_rows(pieces_.at(size_t(seq)), seq_lens_.at(size_t(seq)));
}

bool MaskGeometry::visible(int seq, int64_t qi, int64_t kj) const {
  switch (spec_.kind) {
  case MaskKind::FULL: return true;
  case MaskKind::CAUSAL: return kj <= qi;
  case MaskKind::SLIDING_WINDOW: return kj <= qi && kj > qi - spec_.window;
  case MaskKind::BLOCK_SPARSE:
    if (spec_.causal && kj > qi)
      return false;
    return layout(seq).at(qi / spec_.block, kj / spec_.block);
  case MaskKind::LAMBDA:
  case MaskKind::SHARED_QUESTION:
  case MaskKind::CAUSAL_BLOCKWISE: return detail::range_mask_visible(pieces_[size_t(seq)], qi, kj);
  }
  return false;
}

const BlockLayout& MaskGeometry::layout(int seq, int head) const {
  if (!per_head())
    return layout(seq);
  const auto& hl = head_layouts_.at(static_cast<size_t>(seq));
  CPSIM_ASSERT(head >= 0 && size_t(head) < hl.size(), "head index out of range");
  return hl[size_t(head)];
}

bool MaskGeometry::visible(int seq, int head, int64_t qi, int64_t kj) const {
  if (!per_head())
    return visible(seq, qi, kj);
  if (spec_.causal && kj > qi)
    return false;
  return layout(seq, head).at(qi / spec_.block, kj / spec_.block);
}

int64_t MaskGeometry::cells(int seq, int head, TokenRange q, TokenRange k) const {
  return per_head() ? cells_in(&layout(seq, head), seq, q, k) : cells(seq, q, k);
}

TileCount MaskGeometry::tiles(int seq, int head, TokenRange q, TokenRange k, int64_t tile_m, int64_t tile_n) const {
  return per_head() ? tiles_in(&layout(seq, head), seq, q, k, tile_m, tile_n) : tiles(seq, q, k, tile_m, tile_n);
}

int64_t MaskGeometry::total_cells(int seq, int head) const {
  int64_t s = seq_lens_.at(size_t(seq));
  return cells(seq, head, {0, s}, {0, s});
}

int64_t MaskGeometry::cells(int seq, TokenRange q, TokenRange k) const {
  return cells_in(spec_.kind == MaskKind::BLOCK_SPARSE ? &layout(seq) : nullptr, seq, q, k);
}

int64_t MaskGeometry::cells_in(const BlockLayout* l, int seq, TokenRange q, TokenRange k) const {
  CPSIM_ASSERT(seq >= 0 && size_t(seq) < seq_lens_.size(), "sequence index out of range");
  CPSIM_ASSERT(q.begin >= 0 && q.end <= seq_lens_[size_t(seq)] && k.begin >= 0 && k.end <= seq_lens_[size_t(seq)],
               "token range outside its sequence");
  CPSIM_ASSERT(q.stride >= 1 && k.stride >= 1, "token range stride must be positive");
  if (q.size() <= 0 || k.size() <= 0)
    return 0;
  if (q.stride != 1 || k.stride != 1)
    return strided_cells(l, seq, q, k);
  switch (spec_.kind) {
  case MaskKind::FULL: return q.size() * k.size();
  case MaskKind::CAUSAL: return causal_cells(q, k);
  case MaskKind::SLIDING_WINDOW: return window_cells(q, k, spec_.window);
  case MaskKind::BLOCK_SPARSE: return block_sparse_cells(*l, q, k);
  case MaskKind::LAMBDA:
  case MaskKind::SHARED_QUESTION:
  case MaskKind::CAUSAL_BLOCKWISE: return detail::range_mask_cells(pieces_[size_t(seq)], q.begin, q.end, k.begin, k.end);
  }
  return 0;
}

int64_t MaskGeometry::block_sparse_cells(const BlockLayout& l, TokenRange q, TokenRange k) const {
  int64_t b = l.block, total = 0;
  for (int64_t qb = q.begin / b; qb * b < q.end; ++qb) {
    TokenRange qr = intersect(q, {qb * b, (qb + 1) * b});
    for (int64_t kb = k.begin / b; kb * b < k.end; ++kb) {
      if (!l.at(qb, kb))
        continue;
      TokenRange kr = intersect(k, {kb * b, (kb + 1) * b});
      total += spec_.causal ? causal_cells(qr, kr) : qr.size() * kr.size();
    }
  }
  return total;
}

int64_t MaskGeometry::strided_cells(const BlockLayout* lp, int seq, TokenRange q, TokenRange k) const {
  switch (spec_.kind) {
  case MaskKind::FULL: return q.size() * k.size();
  case MaskKind::CAUSAL: return keys_at_or_before(q, k, 0);
  case MaskKind::SLIDING_WINDOW: return keys_at_or_before(q, k, 0) - keys_at_or_before(q, k, spec_.window);
  case MaskKind::BLOCK_SPARSE: break;
  case MaskKind::LAMBDA:
  case MaskKind::SHARED_QUESTION:
  case MaskKind::CAUSAL_BLOCKWISE:
    return detail::range_mask_strided_cells(pieces_[size_t(seq)], {q.begin, q.size(), q.stride},
                                            {k.begin, k.size(), k.stride});
  }
  // Block-sparse: the layout blocks the progressions pass through, each block pair counted in
  // closed form; blocks a progression skips entirely contribute empty clips.
  const BlockLayout& l = *lp;
  const int64_t b = l.block;
  int64_t total = 0;
  for (int64_t qb = q.begin / b; qb <= q.last() / b; ++qb) {
    TokenRange qr = clip(q, qb * b, (qb + 1) * b);
    if (qr.size() <= 0)
      continue;
    for (int64_t kb = k.begin / b; kb <= k.last() / b; ++kb) {
      if (!l.at(qb, kb))
        continue;
      TokenRange kr = clip(k, kb * b, (kb + 1) * b);
      if (kr.size() > 0)
        total += spec_.causal ? keys_at_or_before(qr, kr, 0) : qr.size() * kr.size();
    }
  }
  return total;
}

namespace {

/** Number of j in [0, n) with pred(j) true, for a predicate that is true on a prefix. */
template <class Pred>
int64_t prefix_count(int64_t n, Pred pred) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (pred(mid))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

} // namespace

TileCount MaskGeometry::tiles(int seq, TokenRange q, TokenRange k, int64_t tile_m, int64_t tile_n) const {
  return tiles_in(spec_.kind == MaskKind::BLOCK_SPARSE ? &layout(seq) : nullptr, seq, q, k, tile_m, tile_n);
}

TileCount MaskGeometry::tiles_in(const BlockLayout* l, int seq, TokenRange q, TokenRange k, int64_t tile_m,
                                 int64_t tile_n) const {
  CPSIM_ASSERT(tile_m > 0 && tile_n > 0, "tile sizes must be positive");
  TileCount t;
  if (q.size() <= 0 || k.size() <= 0)
    return t;
  const int64_t nq = (q.size() + tile_m - 1) / tile_m, nk = (k.size() + tile_n - 1) / tile_n;
  if (spec_.kind == MaskKind::FULL) {
    t.full = nq * nk;
    return t;
  }
  auto q_tile = [&](int64_t i) { return sub_range(q, i * tile_m, std::min(q.size(), (i + 1) * tile_m)); };
  auto k_tile = [&](int64_t j) { return sub_range(k, j * tile_n, std::min(k.size(), (j + 1) * tile_n)); };
  if (spec_.kind == MaskKind::BLOCK_SPARSE) {
    // The layout itself is materialised (n_blocks^2), so a walk over the tiles costs no more.
    for (int64_t i = 0; i < nq; ++i) {
      TokenRange qt = q_tile(i);
      for (int64_t j = 0; j < nk; ++j) {
        TokenRange kt = k_tile(j);
        int64_t c = cells_in(l, seq, qt, kt);
        if (c == qt.size() * kt.size())
          ++t.full;
        else if (c > 0)
          ++t.partial;
      }
    }
    return t;
  }
  if (is_range_mask(spec_.kind)) {
    // DCP's range masks see no key after the query, like causal, so only key tiles starting at or
    // before the query tile's last position can be touched; those are classified by their cells.
    for (int64_t i = 0; i < nq; ++i) {
      TokenRange qt = q_tile(i);
      const int64_t q_last = qt.last();
      const int64_t hi = prefix_count(nk, [&](int64_t j) { return k.at(j * tile_n) <= q_last; });
      for (int64_t j = 0; j < hi; ++j) {
        TokenRange kt = k_tile(j);
        const int64_t c = cells_in(l, seq, qt, kt);
        if (c == qt.size() * kt.size())
          ++t.full;
        else if (c > 0)
          ++t.partial;
      }
    }
    return t;
  }
  // Causal and sliding window: key tile positions grow with j, so per query tile the full tiles
  // and the touched tiles are index intervals found by bisection: O(nq log nk) instead of
  // O(nq nk), which matters for multi-million-token sequences. Key k is visible from query q iff
  // q - w < k <= q (w infinite for causal), so a tile is full iff its last key <= the first query
  // and its first key > the last query - w; it is touched iff its first key <= the last query and
  // its last key > the first query - w (exact for contiguous ranges; strided windows are checked).
  const bool windowed = spec_.kind == MaskKind::SLIDING_WINDOW;
  const bool strided = q.stride != 1 || k.stride != 1;
  for (int64_t i = 0; i < nq; ++i) {
    TokenRange qt = q_tile(i);
    const int64_t q_first = qt.begin, q_last = qt.last();
    // touched candidates: [lo, hi); full: [full_lo, full_hi)
    const int64_t hi = prefix_count(nk, [&](int64_t j) { return k.at(j * tile_n) <= q_last; });
    const int64_t full_hi = prefix_count(nk, [&](int64_t j) { return k_tile(j).last() <= q_first; });
    int64_t lo = 0, full_lo = 0;
    if (windowed) {
      const int64_t w = spec_.window;
      lo = prefix_count(nk, [&](int64_t j) { return k_tile(j).last() <= q_first - w; });
      full_lo = prefix_count(nk, [&](int64_t j) { return k.at(j * tile_n) <= q_last - w; });
    }
    const int64_t full = std::max<int64_t>(0, full_hi - full_lo);
    t.full += full;
    if (!(windowed && strided)) {
      t.partial += std::max<int64_t>(0, hi - lo) - full;
      continue;
    }
    for (int64_t j = lo; j < hi; ++j) {
      if (j >= full_lo && j < full_hi)
        continue;
      if (cells(seq, qt, k_tile(j)) > 0)
        ++t.partial;
    }
  }
  return t;
}

int64_t MaskGeometry::total_cells(int seq) const {
  int64_t s = seq_lens_.at(size_t(seq));
  return cells(seq, {0, s}, {0, s});
}

} // namespace cpsim
