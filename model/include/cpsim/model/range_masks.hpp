// DCP's per-row range masks (schedules.md 5.1: lambda, shared_question, causal_blockwise). Every
// query row sees at most two disjoint key intervals whose ends are clamped linear functions of the
// row, so a sequence is a few row pieces and a rectangle's cells are closed-form sums per piece.
// MaskGeometry holds the pieces; positions are plain integers here so that this header does not
// depend on mask_geometry.hpp.
#pragma once

#include "cpsim/model/workload.hpp"

#include <cstdint>
#include <vector>

namespace cpsim::detail {

/** sum_{q=a}^{b-1} clamp(q + off, lo, hi), for lo <= hi (defined in mask_geometry.cpp). */
int64_t sum_clamped(int64_t a, int64_t b, int64_t off, int64_t lo, int64_t hi);

/** clamp(i + off, lo, hi) as a function of the query row i; lo == hi gives a constant. */
struct RowBound {
  int64_t off = 0;
  int64_t lo = 0;
  int64_t hi = 0;
  int64_t at(int64_t i) const;
};

/** Keys [begin(i), end(i)) with begin(i) <= end(i) for every row of the piece. */
struct RowInterval {
  RowBound begin;
  RowBound end;
};

/** Rows [row_begin, row_end) share the same interval formulas; intervals are disjoint. */
struct RowPiece {
  int64_t row_begin = 0;
  int64_t row_end = 0;
  std::vector<RowInterval> intervals;
};

/** The pieces of one sequence; UserError naming workload.seq_lens[seq] when it cannot hold the mask. */
std::vector<RowPiece> range_mask_pieces(const MaskSpec& m, int64_t seq_len, int seq);

/** Positions {begin + n*stride : 0 <= n < count}. */
struct Progression {
  int64_t begin = 0;
  int64_t count = 0;
  int64_t stride = 1;
};

/** Visible cells of contiguous queries [qa, qb) x keys [ka, kb). */
int64_t range_mask_cells(const std::vector<RowPiece>& pieces, int64_t qa, int64_t qb, int64_t ka, int64_t kb);
/** The same for strided positions (a walk over the query progression). */
int64_t range_mask_strided_cells(const std::vector<RowPiece>& pieces, Progression q, Progression k);
bool range_mask_visible(const std::vector<RowPiece>& pieces, int64_t i, int64_t j);
/** Rows [0, seq_len) spelled out: per row b0, e0, b1, e1 (its two intervals; an absent one is [0, 0)). */
std::vector<int64_t> range_mask_rows(const std::vector<RowPiece>& pieces, int64_t seq_len);

} // namespace cpsim::detail
