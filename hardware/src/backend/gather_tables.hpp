// The host images of PIT's device tables: which source rows each gather entry copies where, and which packed rows
// each home unit sums (the gradient scatter) or merges (the forward scatter-merge along query rows). Pure functions
// of the exec plan, so they are unit-tested on the CPU; the executor only uploads them (sparse_ops.cpp).
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"

#include <cstdint>
#include <vector>

namespace cpsim::backend {

struct GatherEntries {
  // per item (a fixed tile of a slot): the candidate micro-tiles' flags, where the item's index entries start
  std::vector<uint8_t> flags;
  std::vector<int64_t> flag_off, first_cand, entry_off;
  std::vector<int32_t> n_cand;
  // per entry (a gathered micro-tile)
  std::vector<int64_t> src_row0; // source row of position 0 of the entry's sequence (its micro-tile's rows follow)
  std::vector<int32_t> head;     // head column of the entry in the source rows (per-head slots), else 0
  std::vector<int64_t> dst_row;  // first packed row
  std::vector<int64_t> lo, hi;   // positions the tile's rectangle covers: the micro-tile is clipped to [lo, hi)
};
GatherEntries gather_entries(const GatherLayout& g, const RankExecPlan& rp, const Workload& w);

/** A plane a gather copies: plane `src_plane` of buffer `src` into buffer `dst` from element `dst_offset`, packed
 *  rows of `row_elems` elements (K, V along columns; Q, dO, O and the LSE along rows). */
struct GatherPlaneCopy {
  int src = -1, src_plane = 0, dst = -1;
  int64_t dst_offset = 0, row_elems = 0;
};
std::vector<GatherPlaneCopy> gather_planes(const GatherLayout& g);

/** One entry as the device's gather copies it: `rows` source rows from `src_row` (head column `head`) to `dst_row`. */
struct GatheredRun {
  int64_t src_row = 0, dst_row = 0, rows = 0;
  int32_t head = 0;
};
/** The entries in index order, as the device builds the index (the k-th set flag of an item is its k-th entry's
 *  micro-tile) and clips each micro-tile to its span: what the CPU emulator and the tests replay. */
std::vector<GatheredRun> gathered_runs(const GatherEntries& e, int64_t granularity);

/** Units of a home buffer (a row of every head, or one head of a row) and the packed rows each one takes. */
struct UnitSources {
  std::vector<int64_t> unit_elem;   // element offset of each unit in the home buffer's plane
  std::vector<int64_t> unit_lse;    // packed merges: element offset of each unit in the output LSE
  std::vector<int64_t> begin{0};    // packed rows of unit u: rows[begin[u] .. begin[u + 1])
  std::vector<int64_t> rows;
  int64_t unit_elems = 0;           // elements of one unit in one plane
  int unit_heads = 0;
};
/** The gradient scatter: every unit of the home dK/dV (or dQ) buffer, with the gathered rows summed into it. */
UnitSources scatter_units(const ScatterPlan& sp, const RankExecPlan& rp, const Workload& w);
/** The forward scatter-merge along query rows: every unit of the output, with its packed partials. */
UnitSources packed_merge_units(const ForwardMerge& m, const RankExecPlan& rp, const Workload& w);

} // namespace cpsim::backend
