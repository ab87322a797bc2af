// Row pieces of DCP's range masks and their closed-form cell counts (see range_masks.hpp). The
// definitions follow dcp/runtime/flash_attention/utils.py as summarised in schedules.md 5.1.
#include "cpsim/model/range_masks.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim::detail {

namespace {
RowBound constant(int64_t c) { return {0, c, c}; }
/** i + off, clipped to [lo, hi]. */
RowBound linear(int64_t off, int64_t lo, int64_t hi) { return {off, lo, hi}; }
RowInterval causal_prefix(int64_t seq_len) { return {constant(0), linear(1, 0, seq_len)}; }

/** sum over rows [a, b) of |[begin(i), end(i)) ∩ [ka, kb)|, using clamp(clamp(x,lo,hi),ka,kb) = clamp(x, clamp(lo), clamp(hi)). */
int64_t interval_cells(const RowInterval& iv, int64_t a, int64_t b, int64_t ka, int64_t kb) {
  auto part = [&](const RowBound& f) {
    return sum_clamped(a, b, f.off, std::clamp(f.lo, ka, kb), std::clamp(f.hi, ka, kb));
  };
  return part(iv.end) - part(iv.begin);
}

/** Positions of k in [lo, hi). */
int64_t progression_count(Progression k, int64_t lo, int64_t hi) {
  auto first_at_or_after = [&](int64_t x) {
    if (x <= k.begin)
      return int64_t(0);
    return std::min(k.count, (x - k.begin + k.stride - 1) / k.stride);
  };
  return std::max<int64_t>(0, first_at_or_after(hi) - first_at_or_after(lo));
}
} // namespace

int64_t RowBound::at(int64_t i) const { return std::clamp(i + off, lo, hi); }

std::vector<RowPiece> range_mask_pieces(const MaskSpec& m, int64_t S, int seq) {
  std::vector<RowPiece> p;
  switch (m.kind) {
  case MaskKind::LAMBDA: {
    // sink keys [0, min(sink, i+1)) plus the band [max(0, i-window+1), i+1); the sink part is cut at
    // the band's start so the two intervals never overlap.
    const int64_t w = m.window, ns = m.sink;
    p.push_back({0, S, {{constant(0), linear(1 - w, 0, ns)}, {linear(1 - w, 0, S), linear(1, 0, S)}}});
    break;
  }
  case MaskKind::SHARED_QUESTION: {
    const int64_t nq = std::max<int64_t>(1, int64_t(double(S) * m.question_fraction));
    const int64_t na = m.answers, len = na > 0 ? (S - nq) / na : 0;
    if (len < 1)
      throw UserError("'workload.seq_lens[" + std::to_string(seq) + "]' = " + std::to_string(S) +
                      ": too short for shared_question with a question of " + std::to_string(nq) + " tokens and " +
                      std::to_string(na) + " answers (each answer needs at least one token)");
    p.push_back({0, nq, {causal_prefix(S)}});
    for (int64_t a = 0; a < na; ++a) {
      const int64_t start = nq + a * len, end = a + 1 == na ? S : start + len;
      p.push_back({start, end, {{constant(0), constant(nq)}, {constant(start), linear(1, 0, S)}}});
    }
    break;
  }
  case MaskKind::CAUSAL_BLOCKWISE: {
    const int64_t b = m.block, nb = (S + b - 1) / b, last = (nb - 1) * b;
    p.push_back({0, std::min(b, S), {causal_prefix(S)}}); // block 0: causal
    if (nb >= 3)                                           // middle blocks: first block + local band
      p.push_back({b, last, {{constant(0), constant(b)}, {linear(-m.local_blocks * b, b, S), linear(1, 0, S)}}});
    if (nb >= 2) // the last block sees every earlier key
      p.push_back({last, S, {causal_prefix(S)}});
    break;
  }
  default: CPSIM_ASSERT(false, "range_mask_pieces on a mask that is not a range mask");
  }
  return p;
}

int64_t range_mask_cells(const std::vector<RowPiece>& pieces, int64_t qa, int64_t qb, int64_t ka, int64_t kb) {
  int64_t total = 0;
  for (const RowPiece& pc : pieces) {
    int64_t a = std::max(qa, pc.row_begin), b = std::min(qb, pc.row_end);
    if (a >= b)
      continue;
    for (const RowInterval& iv : pc.intervals)
      total += interval_cells(iv, a, b, ka, kb);
  }
  return total;
}

int64_t range_mask_strided_cells(const std::vector<RowPiece>& pieces, Progression q, Progression k) {
  int64_t total = 0;
  size_t pi = 0;
  for (int64_t n = 0; n < q.count; ++n) {
    const int64_t i = q.begin + n * q.stride;
    while (pi < pieces.size() && pieces[pi].row_end <= i)
      ++pi;
    if (pi == pieces.size())
      break;
    for (const RowInterval& iv : pieces[pi].intervals)
      total += progression_count(k, iv.begin.at(i), iv.end.at(i));
  }
  return total;
}

bool range_mask_visible(const std::vector<RowPiece>& pieces, int64_t i, int64_t j) {
  for (const RowPiece& pc : pieces)
    if (i >= pc.row_begin && i < pc.row_end) {
      for (const RowInterval& iv : pc.intervals)
        if (j >= iv.begin.at(i) && j < iv.end.at(i))
          return true;
      return false;
    }
  return false;
}

std::vector<int64_t> range_mask_rows(const std::vector<RowPiece>& pieces, int64_t seq_len) {
  std::vector<int64_t> out(size_t(4 * seq_len), 0);
  for (const RowPiece& pc : pieces) {
    CPSIM_ASSERT(pc.intervals.size() <= 2, "a range mask row has at most two key intervals");
    for (int64_t i = std::max<int64_t>(0, pc.row_begin); i < std::min(pc.row_end, seq_len); ++i)
      for (size_t v = 0; v < pc.intervals.size(); ++v) {
        out[size_t(4 * i) + 2 * v] = pc.intervals[v].begin.at(i);
        out[size_t(4 * i) + 2 * v + 1] = pc.intervals[v].end.at(i);
      }
  }
  return out;
}

} // namespace cpsim::detail
