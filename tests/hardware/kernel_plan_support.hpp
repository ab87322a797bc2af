// What the kernels compute under a plan the backend built itself, as the CPU sees it: a cell is computed iff its
// tiles are listed and, in a partial tile, the plan's mask (MaskDesc::visible) lets it through. Shared by the
// kernel-plan tests and the PIT emulation tests.
#pragma once

#include "../../hardware/src/backend/kernel_plans.hpp"

#include "cpsim/model/micro_tiles.hpp"

#include <catch2/catch.hpp>

#include <utility>
#include <vector>

namespace cpsim::backend::test_support {

namespace kn = cpsim::kernels;


/** What the kernels compute for (q tile qt, query i of it) x (k tile kt, key j of it) under slot `slot`. */
inline bool computed(const PlannedKernel& k, int slot, size_t qt, int64_t i, size_t kt, int64_t j) {
  const kn::KernelPlan& p = k.plan;
  const size_t item = size_t(slot) * p.q_tiles.size() + qt;
  for (int32_t e = p.fwd.offsets[item]; e < p.fwd.offsets[item + 1]; ++e) {
    if (size_t(p.fwd.idx[size_t(e)]) != kt)
      continue;
    const kn::TileRange &tq = p.q_tiles[qt], &tk = p.k_tiles[kt];
    if (j >= tk.n || i >= tq.n)
      return false;
    if (e - p.fwd.offsets[item] < p.fwd.n_full[item])
      return true;
    return k.mask.visible(tq.seq, tq.pos(i), tk.pos(j));
  }
  return false;
}

/** The tile and offset holding buffer row `row` on one side. */
inline std::pair<size_t, int64_t> tile_of(const std::vector<kn::TileRange>& t, int64_t row) {
  for (size_t x = 0; x < t.size(); ++x)
    if (row >= t[x].row0 && row < t[x].row0 + t[x].n)
      return {x, row - t[x].row0};
  return {t.size(), 0};
}

inline void check_lists(const kn::KernelPlan& p) {
  int64_t fwd = 0, bwd = 0;
  for (int32_t c : p.fwd.offsets)
    fwd = c;
  for (int32_t c : p.bwd.offsets)
    bwd = c;
  CHECK(fwd == bwd); // the backward lists are the forward ones transposed
  CHECK(p.q_order.size() == p.q_tiles.size());
  CHECK(p.k_order.size() == p.k_tiles.size());
}


/** One slot gathering key columns per query tile of 128 over [0, n) of sequence 0 (rows are positions). */
inline GatherLayout keys_layout(const MaskGeometry& m, int64_t n, int64_t granularity) {
  GatherLayout gl;
  gl.granularity = granularity;
  gl.slot_heads = {-1};
  gl.tiles.resize(1);
  for (const GatheredTile& t : gathered_micro_tiles(m, 0, 0, {0, n}, {0, n}, 128, granularity, GatherAxis::KEYS)) {
    GatherLayout::Tile x;
    x.fixed_pos = x.fixed_row = t.fixed.begin;
    x.fixed_n = t.fixed.size();
    x.packed_row = gl.packed_rows;
    x.micro = t.micro;
    gl.packed_rows += t.gathered();
    gl.tiles[0].push_back(x);
  }
  return gl;
}

} // namespace cpsim::backend::test_support
