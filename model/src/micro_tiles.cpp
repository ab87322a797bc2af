// Micro-tile gathering counts (see micro_tiles.hpp).
#include "cpsim/model/micro_tiles.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

GatheredTiles& GatheredTiles::operator+=(const GatheredTiles& o) {
  tiles.full += o.tiles.full;
  tiles.partial += o.tiles.partial;
  gathered += o.gathered;
  micro_tiles += o.micro_tiles;
  candidates += o.candidates;
  return *this;
}

int64_t GatheredTile::gathered() const {
  int64_t n = 0;
  for (const TokenRange& t : micro)
    n += t.size();
  return n;
}

std::vector<GatheredTile> gathered_micro_tiles(const MaskGeometry& m, int seq, int head, TokenRange q, TokenRange k,
                                               int64_t fixed_tile, int64_t granularity, GatherAxis axis) {
  CPSIM_ASSERT(q.stride == 1 && k.stride == 1, "micro-tile gathering needs contiguous token ranges");
  CPSIM_ASSERT(fixed_tile > 0 && granularity > 0, "tile sizes and granularity must be positive");
  std::vector<GatheredTile> out;
  if (q.size() <= 0 || k.size() <= 0)
    return out;
  // `fixed` is tiled by the kernel as is; `packed` is gathered in micro-tiles
  const bool keys = axis == GatherAxis::KEYS;
  const TokenRange fixed = keys ? q : k, packed = keys ? k : q;
  // Under a causal layout the key micro-tiles overlapping a query tile's own positions are gathered
  // whole, as one band of consecutive keys: the kernel then masks the diagonal by position (the
  // other gathered keys all precede the tile's queries), like the block-sparse diagonal of
  // MInference's PIT kernel.
  const bool band = keys && m.spec().kind == MaskKind::BLOCK_SPARSE && m.spec().causal;
  for (int64_t f0 = fixed.begin; f0 < fixed.end; f0 += fixed_tile) {
    GatheredTile t;
    t.fixed = {f0, std::min(fixed.end, f0 + fixed_tile)};
    // micro-tiles are aligned to multiples of the granularity in the sequence, like layout blocks
    for (int64_t j = packed.begin / granularity; j * granularity < packed.end; ++j) {
      TokenRange pt{std::max(packed.begin, j * granularity), std::min(packed.end, (j + 1) * granularity)};
      const bool in_band = band && pt.end > t.fixed.begin && pt.begin < t.fixed.end;
      if (band && pt.begin >= t.fixed.end)
        break; // after the tile's last query: never visible
      ++t.candidates;
      const int64_t c = keys ? m.cells(seq, head, t.fixed, pt) : m.cells(seq, head, pt, t.fixed);
      if (c == 0 && !in_band)
        continue;
      t.micro.push_back(pt);
      t.cells += c;
    }
    out.push_back(std::move(t));
  }
  return out;
}

GatheredTiles gathered_tiles(const MaskGeometry& m, int seq, int head, TokenRange q, TokenRange k, int64_t tile_m,
                             int64_t tile_n, int64_t granularity, GatherAxis axis) {
  CPSIM_ASSERT(tile_m > 0 && tile_n > 0, "tile sizes must be positive");
  const bool keys = axis == GatherAxis::KEYS;
  const int64_t packed_tile = keys ? tile_n : tile_m;
  GatheredTiles g;
  for (const GatheredTile& t : gathered_micro_tiles(m, seq, head, q, k, keys ? tile_m : tile_n, granularity, axis)) {
    g.candidates += t.candidates;
    const int64_t tokens = t.gathered();
    if (tokens == 0)
      continue;
    g.micro_tiles += int64_t(t.micro.size());
    g.gathered += tokens;
    const int64_t n = (tokens + packed_tile - 1) / packed_tile;
    if (t.cells == t.fixed.size() * tokens)
      g.tiles.full += n;
    else
      g.tiles.partial += n;
  }
  return g;
}

} // namespace cpsim
