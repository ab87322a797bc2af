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

GatheredTiles gathered_tiles(const MaskGeometry& m, int seq, int head, TokenRange q, TokenRange k, int64_t tile_m,
                             int64_t tile_n, int64_t granularity, GatherAxis axis) {
  CPSIM_ASSERT(q.stride == 1 && k.stride == 1, "micro-tile gathering needs contiguous token ranges");
  CPSIM_ASSERT(tile_m > 0 && tile_n > 0 && granularity > 0, "tile sizes and granularity must be positive");
  GatheredTiles g;
  if (q.size() <= 0 || k.size() <= 0)
    return g;
  // `fixed` is tiled by the kernel as is; `packed` is gathered in micro-tiles
  const bool keys = axis == GatherAxis::KEYS;
  const TokenRange fixed = keys ? q : k, packed = keys ? k : q;
  const int64_t fixed_tile = keys ? tile_m : tile_n, packed_tile = keys ? tile_n : tile_m;
  for (int64_t f0 = fixed.begin; f0 < fixed.end; f0 += fixed_tile) {
    TokenRange ft{f0, std::min(fixed.end, f0 + fixed_tile)};
    int64_t tokens = 0, cells = 0;
    // micro-tiles are aligned to multiples of the granularity in the sequence, like layout blocks
    for (int64_t j = packed.begin / granularity; j * granularity < packed.end; ++j) {
      TokenRange pt{std::max(packed.begin, j * granularity), std::min(packed.end, (j + 1) * granularity)};
      ++g.candidates;
      int64_t c = keys ? m.cells(seq, head, ft, pt) : m.cells(seq, head, pt, ft);
      if (c == 0)
        continue;
      ++g.micro_tiles;
      tokens += pt.size();
      cells += c;
    }
    if (tokens == 0)
      continue;
    g.gathered += tokens;
    int64_t n = (tokens + packed_tile - 1) / packed_tile;
    if (cells == ft.size() * tokens)
      g.tiles.full += n;
    else
      g.tiles.partial += n;
  }
  return g;
}

} // namespace cpsim
