// Host-side planner of the attention kernels: turns a mask (full, causal top-left or bottom-right,
// sliding window, block-sparse layout, key intervals per query row, explicit key ranges per query range) over packed rows into
// the lists the kernels walk: per (head slot, query tile) the key tiles, fully visible ones first,
// and the transposed lists per (head slot, key tile) for the backward pass. Pure C++ (no CUDA), so
// CI tests it without a GPU; attention.hpp uploads a plan to the device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace cpsim::kernels {

/** The kernels' tile: 64 query rows x 64 key rows. Layout blocks of 128 are split into 2x2 tiles. */
constexpr int kTileRows = 64;

/**
 * A run of consecutive buffer rows [row0, row0 + n) holding the token positions pos0 + i * pos_stride
 * of sequence `seq`. Positions are what the mask sees; rows are where the data is.
 */
struct TileRange {
  int64_t row0 = 0;
  int64_t pos0 = 0;
  int64_t pos_stride = 1;
  int32_t n = 0;
  int32_t seq = 0;
  int64_t pos(int64_t i) const { return pos0 + i * pos_stride; }
  int64_t last_pos() const { return pos(n - 1); }
};

/** Which cells (query position i, key position j) of a sequence are visible. */
struct MaskDesc {
  bool causal = false;  // j <= i (bottom-right alignment: give the queries positions offset by n - m)
  int64_t window = 0;   // > 0: also i - window < j (sliding window)
  int64_t layout_block = 0; // > 0: also the layout bit of (i / layout_block, j / layout_block)
  /** Per sequence: bitmap row-major (query block, key block), rows of layout_n_blocks[seq] key blocks; square for
   *  plan_segments (n_blocks x n_blocks), any number of rows for plans built elsewhere (PIT's packed query rows).
   *  Shared by all heads. */
  std::vector<std::vector<uint8_t>> layouts;
  std::vector<int64_t> layout_n_blocks;
  /**
   * Per sequence, optional (an empty vector: no such rule): for each query position i, two key intervals
   * [r[4i], r[4i+1]) and [r[4i+2], r[4i+3]); a key is visible only inside one of them (DCP's per-row range masks:
   * lambda, shared question, causal blockwise). An empty interval has end <= begin.
   */
  std::vector<std::vector<int32_t>> row_ranges;
  bool visible(int seq, int64_t i, int64_t j) const;
};

/** A query x key rectangle of one sequence, in buffer rows and token positions (either side may be strided). */
struct PlanSegment {
  int seq = 0;
  int64_t q_row0 = 0, q_pos0 = 0, q_stride = 1, q_n = 0;
  int64_t k_row0 = 0, k_pos0 = 0, k_stride = 1, k_n = 0;
};

/** Compressed lists: entries of item x are idx[offsets[x] .. offsets[x+1]), the first n_full[x] fully visible. */
struct TileLists {
  std::vector<int32_t> offsets{0};
  std::vector<int32_t> n_full;
  std::vector<int32_t> idx;
  int64_t items() const { return int64_t(n_full.size()); }
  int64_t count(int64_t x) const { return offsets[std::size_t(x + 1)] - offsets[std::size_t(x)]; }
};

/** What the kernels execute: tiles of both sides, forward lists per (slot, q tile), backward lists per (slot, k tile). */
struct KernelPlan {
  int head_slots = 1; // 1: one list for all heads; H: one per query head of the call (per-head layouts)
  std::vector<TileRange> q_tiles;
  std::vector<TileRange> k_tiles;
  TileLists fwd; // item = slot * q_tiles.size() + q tile; entries are k tile indices
  TileLists bwd; // item = slot * k_tiles.size() + k tile; entries are q tile indices
  /** Launch order of the fast kernels: tiles by decreasing work (longest lists first, summed over
   *  slots), so that the long rows of causal or sparse masks do not finish in a tail wave. */
  std::vector<int32_t> q_order, k_order;
  /** (q tile, k tile) pairs computed, per head slot: full and partial. */
  int64_t full_pairs() const;
  int64_t partial_pairs() const;
};

/** Indices [first, last) of the tiles (sorted by row) lying inside buffer rows [r0, r1). */
std::pair<size_t, size_t> tiles_within(const std::vector<TileRange>& t, int64_t r0, int64_t r1);
/** CSR lists from per-item (index, full?) entries: full entries first, each group in index order (sorts them). */
TileLists compress_lists(std::vector<std::vector<std::pair<int32_t, bool>>>& per_item);
/** Fills a plan whose tiles and forward lists are set: the backward lists (their exact transpose) and the
 *  longest-first launch orders. For planners of their own (the backend's per-head and PIT plans). */
void finish_plan(KernelPlan& p);

/**
 * Plans rectangles under one mask. Rows that several segments share are tiled once, so their keys
 * meet in one softmax (forward) and their gradients in one sum (backward). Throws UserError when two
 * segments cover the same (query row, key row) pair or disagree on a row's position.
 */
KernelPlan plan_segments(const std::vector<PlanSegment>& segs, const MaskDesc& mask);

/**
 * Block-sparse layout in the FlexAttention form: per (sequence, head slot, query block) the key
 * blocks that are fully visible and those only partly visible (the kernel applies `MaskDesc`'s
 * causal/window rule to those). Sequences are packed one after another in rows; block is 64 or 128.
 */
struct BlockLists {
  int block = 128;
  int head_slots = 1;
  std::vector<int64_t> seq_lens;
  /** full[(seq_block_base(seq) + q block) * head_slots + slot], likewise partial. */
  std::vector<std::vector<int32_t>> full;
  std::vector<std::vector<int32_t>> partial;
  int64_t blocks(int seq) const { return (seq_lens[std::size_t(seq)] + block - 1) / block; }
  int64_t seq_block_base(int seq) const;
  int64_t index(int seq, int slot, int64_t qb) const { return (seq_block_base(seq) + qb) * head_slots + slot; }
};

/** The lists of a mask spec over a packed batch: full, causal, window or layout (head-shared or per head). */
BlockLists block_lists_from_mask(const MaskDesc& mask, const std::vector<int64_t>& seq_lens, int block, int head_slots = 1);
/** Per (sequence, slot, key block): the query blocks that see it, fully and partly (for the backward pass). */
BlockLists transpose(const BlockLists& b);
/**
 * Kernel plan of explicit block lists over a packed batch (positions start at 0 in each sequence).
 * Tiles of partial blocks are classified again under `mask`'s causal/window rule (its layout is
 * ignored: the lists are the layout), so empty tiles are dropped and fully visible ones skip masking.
 */
KernelPlan plan_block_lists(const BlockLists& b, const MaskDesc& mask);
/** Random layout of `density` (diagonal blocks kept), for tests and benchmarks; deterministic in seed. */
std::vector<uint8_t> random_layout(int64_t n_blocks, double density, uint64_t seed, bool causal);

} // namespace cpsim::kernels
