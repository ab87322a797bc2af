// PIT-style gathering (schedules.md 8): the key columns a query tile needs (or the query rows a key
// tile needs), taken in micro-tiles of `granularity` tokens, are packed into dense tiles before
// the kernel, so the kernel's work is the packed tiles, not the layout's own tiles. Shared by the
// PIT and DSV generators.
#pragma once

#include "cpsim/model/mask_geometry.hpp"

#include <cstdint>

namespace cpsim {

/** The permutation-invariant axis the micro-tiles run along. */
enum class GatherAxis {
  KEYS,   // per query tile, gather key columns (MInference's PIT kernel): K, V rows are gathered
  QUERIES // per key tile, gather query rows: Q rows are gathered and outputs scattered back
};

struct GatheredTiles {
  TileCount tiles;           // dense tile_m x tile_n tiles after the gather (partial: some cell masked)
  int64_t gathered = 0;      // tokens gathered, summed over the fixed tiles (u_i of schedules.md 8)
  int64_t micro_tiles = 0;   // micro-tiles gathered (index entries), summed over the fixed tiles
  int64_t candidates = 0;    // micro-tiles inspected while building the index, summed likewise
  GatheredTiles& operator+=(const GatheredTiles& o);
};

/** One fixed tile and the micro-tiles of the other side that hold a visible cell of it, in position order. */
struct GatheredTile {
  TokenRange fixed;               // the query tile (KEYS) or the key tile (QUERIES)
  std::vector<TokenRange> micro;  // gathered micro-tiles (aligned to multiples of the granularity, clipped)
  int64_t candidates = 0;         // micro-tiles inspected
  int64_t cells = 0;              // visible cells of fixed x gathered
  int64_t gathered() const;       // tokens gathered
};

/** What a gather packs for queries q x keys k of one head, per fixed tile (see below). Under a causal block-sparse
 *  layout the key micro-tiles overlapping a query tile's own positions are gathered whole (a band of consecutive
 *  keys the kernel masks by position), and none after its last query. */
std::vector<GatheredTile> gathered_micro_tiles(const MaskGeometry& m, int seq, int head, TokenRange q, TokenRange k,
                                               int64_t fixed_tile, int64_t granularity, GatherAxis axis);

/**
 * Gathered tiles of queries q x keys k of one head. KEYS: for each query tile (tile_m consecutive
 * queries, anchored at q.begin), the key micro-tiles [j*g, (j+1)*g) intersected with k that hold
 * a visible cell are packed, giving ceil(u_i / tile_n) dense tiles. QUERIES: the same with the
 * roles of queries and keys swapped, ceil(v_j / tile_m) tiles per key tile. Ranges contiguous.
 */
GatheredTiles gathered_tiles(const MaskGeometry& m, int seq, int head, TokenRange q, TokenRange k, int64_t tile_m,
                             int64_t tile_n, int64_t granularity, GatherAxis axis = GatherAxis::KEYS);

} // namespace cpsim
