// Micro-tile gathering counts (see micro_tiles.hpp).
#include "cpsim/model/micro_tiles.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

GatheredTiles& GatheredTiles::operator+=(const GatheredTiles& o) {
  tiles.full += o.tiles.full;
  tiles.partial += o.tiles.partial;
  gathered_cols += o.gathered_cols;
  micro_tiles += o.micro_tiles;
  candidates += o.candidates;
  return *this;
}

GatheredTiles gathered_tiles(const MaskGeometry& m, int seq, int head, TokenRange q, TokenRange k, int64_t tile_m,
                             int64_t tile_n, int64_t granularity) {
  CPSIM_ASSERT(q.stride == 1 && k.stride == 1, "micro-tile gathering needs contiguous token ranges");
  CPSIM_ASSERT(tile_m > 0 && tile_n > 0 && granularity > 0, "tile sizes and granularity must be positive");
  GatheredTiles g;
  if (q.size() <= 0 || k.size() <= 0)
    return g;
  for (int64_t q0 = q.begin; q0 < q.end; q0 += tile_m) {
    TokenRange qt{q0, std::min(q.end, q0 + tile_m)};
    int64_t cols = 0, cells = 0;
    // micro-tiles are aligned to multiples of the granularity in the sequence, like layout blocks
    for (int64_t j = k.begin / granularity; j * granularity < k.end; ++j) {
      TokenRange kt{std::max(k.begin, j * granularity), std::min(k.end, (j + 1) * granularity)};
      ++g.candidates;
      int64_t c = m.cells(seq, head, qt, kt);
      if (c == 0)
        continue;
      ++g.micro_tiles;
      cols += kt.size();
      cells += c;
    }
    if (cols == 0)
      continue;
    g.gathered_cols += cols;
    int64_t n = (cols + tile_n - 1) / tile_n;
    if (cells == qt.size() * cols)
      g.tiles.full += n;
    else
      g.tiles.partial += n;
  }
  return g;
}

} // namespace cpsim
