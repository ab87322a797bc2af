// Which (query, key) cells of a sequence are visible, counted over rectangles: the unmasked cells
// give FLOPs, and the kernel's tiles (full, partly masked, empty) give time. Closed forms for full,
// causal and sliding-window masks; block-sparse layouts are materialised once per sequence, and
// once per (sequence, head) for per-head masks (DSV). Head-agnostic queries on a per-head mask see
// the union of the heads' layouts, which is what a kernel covering all heads must visit.
#pragma once

#include "cpsim/model/range_masks.hpp"
#include "cpsim/model/workload.hpp"

#include <cstdint>
#include <vector>

namespace cpsim {

/**
 * Token positions {begin + i*stride : begin + i*stride < end}: a contiguous range when stride is 1,
 * an arithmetic progression otherwise (stripe layouts hold every W-th token). Generators write
 * end = last + 1 so that equal sets compare equal.
 */
struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0; // exclusive
  int64_t stride = 1;
  /** Number of positions in the set (for stride 1 this is end - begin, as before strides existed). */
  int64_t size() const { return stride == 1 ? end - begin : (end > begin ? (end - begin + stride - 1) / stride : 0); }
  int64_t at(int64_t i) const { return begin + i * stride; }
  int64_t last() const { return at(size() - 1); }
  bool operator==(const TokenRange&) const = default;
};

/** The positions of `r` at indices [i0, i1) of its progression, as a range of the same stride. */
TokenRange sub_range(TokenRange r, int64_t i0, int64_t i1);

struct TileCount {
  int64_t full = 0;    // every cell visible
  int64_t partial = 0; // some cells visible: the kernel still computes the whole tile
  int64_t total() const { return full + partial; }
};

/** Block-sparse layout of one sequence: nb x nb bitmap over (query block, key block). */
struct BlockLayout {
  int64_t block = 128;
  int64_t n_blocks = 0;
  std::vector<uint8_t> bits; // row-major [q_block * n_blocks + k_block]
  bool at(int64_t qb, int64_t kb) const { return bits[static_cast<size_t>(qb * n_blocks + kb)] != 0; }
};

class MaskGeometry {
public:
  /** Builds layouts for block-sparse masks (random from seed, or from the layout file). */
  explicit MaskGeometry(const Workload& w);

  /** Visible cells (per head) of sequence `seq` in queries q x keys k (either may be strided). */
  int64_t cells(int seq, TokenRange q, TokenRange k) const;
  /**
   * Tiles of tile_m x tile_n, anchored at q.begin and k.begin, split into full and partial. For
   * strided ranges the kernel sees the packed tensors, so a tile is tile_m consecutive positions
   * of the progression.
   */
  TileCount tiles(int seq, TokenRange q, TokenRange k, int64_t tile_m, int64_t tile_n) const;
  bool visible(int seq, int64_t qi, int64_t kj) const;
  /** Visible cells of whole sequence (per head). */
  int64_t total_cells(int seq) const;

  /** True when heads have their own layouts; the head-taking overloads then differ by head. */
  bool per_head() const { return !head_layouts_.empty(); }
  int64_t cells(int seq, int head, TokenRange q, TokenRange k) const;
  TileCount tiles(int seq, int head, TokenRange q, TokenRange k, int64_t tile_m, int64_t tile_n) const;
  bool visible(int seq, int head, int64_t qi, int64_t kj) const;
  int64_t total_cells(int seq, int head) const;

  const MaskSpec& spec() const { return spec_; }
  /** A range mask's rows of sequence `seq`: 4 values per query position (two key intervals, see range_masks.hpp). */
  std::vector<int64_t> row_key_intervals(int seq) const;
  /** The sequence's layout (the union over heads for a per-head mask). */
  const BlockLayout& layout(int seq) const { return layouts_.at(static_cast<size_t>(seq)); }
  /** The layout head `head` of sequence `seq` uses (the sequence's layout unless per_head()). */
  const BlockLayout& layout(int seq, int head) const;

private:
  int64_t block_sparse_cells(const BlockLayout& l, TokenRange q, TokenRange k) const;
  int64_t strided_cells(const BlockLayout* l, int seq, TokenRange q, TokenRange k) const;
  int64_t cells_in(const BlockLayout* l, int seq, TokenRange q, TokenRange k) const;
  TileCount tiles_in(const BlockLayout* l, int seq, TokenRange q, TokenRange k, int64_t tile_m, int64_t tile_n) const;
  MaskSpec spec_;
  std::vector<int64_t> seq_lens_;
  std::vector<BlockLayout> layouts_;
  std::vector<std::vector<detail::RowPiece>> pieces_; // range masks: row pieces per sequence
  std::vector<std::vector<BlockLayout>> head_layouts_; // [seq][head], only for per-head masks
};

/** Deterministic random layout (same seed -> same layout on every platform); diagonal kept. */
BlockLayout random_block_layout(int64_t seq_len, int64_t block, double density, uint64_t seed, int seq_index,
                                bool causal);
/** Layouts read from a layout file: per sequence, or per sequence and head. */
struct LayoutFile {
  std::vector<BlockLayout> per_seq;
  std::vector<std::vector<BlockLayout>> per_head; // [seq][head]
};
/**
 * Reads {"block": B, "layouts": [[[k blocks of q block 0], ...] per sequence]} or, per head,
 * {"block": B, "head_layouts": [[[[k blocks of q block 0], ...] per head] per sequence]}; validates it.
 */
LayoutFile load_block_layouts(const std::string& path, const std::vector<int64_t>& seq_lens, int64_t block,
                              int heads);

} // namespace cpsim
