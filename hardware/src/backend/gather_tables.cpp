// Host images of PIT's device tables; see gather_tables.hpp.
#include "gather_tables.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim::backend {

namespace {

/** The home buffer's units and the packed rows each takes, home_row[slot][tile][micro] giving a micro-tile's first row. */
UnitSources home_units(const GatherLayout& g, const std::vector<std::vector<std::vector<int64_t>>>& home_row,
                       const BufferPlacement& dst, const Workload& w, const std::string& what) {
  const int per = w.heads / w.kv_heads;
  const bool per_head = g.slot_heads[0] >= 0;
  if (!per_head && dst.width != g.row_elems)
    throw UserError(what + ": its buffer '" + dst.name + "' has rows of " + std::to_string(dst.width) +
                    " elements, the packed rows " + std::to_string(g.row_elems));
  const int64_t per_row = per_head ? dst.heads : 1;
  UnitSources u;
  u.unit_elems = per_head ? dst.head_width : dst.width;
  u.unit_heads = per_head ? 1 : dst.heads;
  std::vector<std::vector<int64_t>> rows(size_t(dst.rows * per_row));
  for (size_t slot = 0; slot < g.tiles.size(); ++slot) {
    int64_t col = 0;
    if (per_head) { // the slot's head in the home rows: its query head (rows), its KV head (columns)
      col = dst.head_pos(g.rows ? g.slot_heads[slot] : g.slot_heads[slot] / per);
      if (col < 0)
        throw UserError(what + ": its buffer '" + dst.name + "' does not hold the head of slot " + std::to_string(slot));
    }
    for (size_t ti = 0; ti < g.tiles[slot].size(); ++ti) {
      const auto& t = g.tiles[slot][ti];
      int64_t prow = t.packed_row;
      for (size_t m = 0; m < t.micro.size(); ++m)
        for (int64_t x = 0; x < t.micro[m].size(); ++x, ++prow)
          rows[size_t((home_row[slot][ti][m] + x) * per_row + col)].push_back(prow);
    }
  }
  for (int64_t i = 0; i < dst.rows * per_row; ++i) {
    u.unit_elem.push_back((i / per_row) * dst.width + (i % per_row) * dst.head_width);
    u.rows.insert(u.rows.end(), rows[size_t(i)].begin(), rows[size_t(i)].end());
    u.begin.push_back(int64_t(u.rows.size()));
  }
  return u;
}

} // namespace

GatherEntries gather_entries(const GatherLayout& g, const RankExecPlan& rp, const Workload& w) {
  const int per = w.heads / w.kv_heads;
  const BufferPlacement& src = rp.buffers[size_t(g.src[0])];
  GatherEntries e;
  for (size_t slot = 0; slot < g.tiles.size(); ++slot) {
    const int head = g.slot_heads[slot];
    const int32_t col = head < 0 ? 0 : int32_t(src.head_pos(g.rows ? head : head / per));
    for (const auto& t : g.tiles[slot]) {
      e.flag_off.push_back(int64_t(e.flags.size()));
      e.n_cand.push_back(int32_t(t.candidates));
      e.first_cand.push_back(t.first_candidate);
      e.entry_off.push_back(t.index_entry);
      const size_t f0 = e.flags.size();
      e.flags.resize(f0 + size_t(t.candidates), 0);
      int64_t row = t.packed_row;
      for (size_t m = 0; m < t.micro.size(); ++m) {
        const int64_t c = t.micro[m].begin / g.granularity - t.first_candidate;
        CPSIM_ASSERT(c >= 0 && c < t.candidates, "a gathered micro-tile lies outside its tile's candidates");
        e.flags[f0 + size_t(c)] = 1;
        e.src_row0.push_back(t.src_row[m] - t.micro[m].begin);
        e.head.push_back(col);
        e.dst_row.push_back(row);
        e.lo.push_back(t.span.begin);
        e.hi.push_back(t.span.end);
        row += t.micro[m].size();
      }
    }
  }
  return e;
}

std::vector<GatherPlaneCopy> gather_planes(const GatherLayout& g) {
  const int64_t plane = g.packed_rows * g.row_elems;
  if (!g.rows)
    return {{g.src[0], 0, g.packed, 0, g.row_elems}, {g.src[0], 1, g.packed, plane, g.row_elems}};
  std::vector<GatherPlaneCopy> out;
  for (size_t i = 0; i < g.src.size(); ++i)
    out.push_back({g.src[i], 0, g.packed, int64_t(i) * plane, g.row_elems});
  if (g.src_lse >= 0)
    out.push_back({g.src_lse, 0, g.packed_lse, 0, g.row_heads});
  return out;
}

std::vector<GatheredRun> gathered_runs(const GatherEntries& e, int64_t granularity) {
  std::vector<GatheredRun> out;
  for (size_t item = 0; item < e.flag_off.size(); ++item)
    for (int32_t c = 0; c < e.n_cand[item]; ++c) {
      if (!e.flags[size_t(e.flag_off[item] + c)])
        continue;
      const size_t k = out.size();
      const int64_t id = e.first_cand[item] + c;
      const int64_t first = std::max(id * granularity, e.lo[k]), end = std::min((id + 1) * granularity, e.hi[k]);
      out.push_back({e.src_row0[k] + first, e.dst_row[k], end - first, e.head[k]});
    }
  return out;
}

UnitSources scatter_units(const ScatterPlan& sp, const RankExecPlan& rp, const Workload& w) {
  const GatherLayout& g = rp.gathers.at(sp.gather);
  const BufferPlacement& dst = rp.buffers[size_t(sp.dst)];
  return home_units(g, sp.home_row, dst, w, "PIT scatter into '" + dst.name + "'");
}

UnitSources packed_merge_units(const ForwardMerge& m, const RankExecPlan& rp, const Workload& w) {
  const GatherLayout& g = rp.gathers.at(m.gather);
  const BufferPlacement &o = rp.buffers[size_t(m.out)], &lse = rp.buffers[size_t(m.lse_out)];
  UnitSources u = home_units(g, m.home_row, o, w, "PIT scatter-merge into '" + o.name + "'");
  for (int64_t e : u.unit_elem) // the same row and head of the LSE (one element per head)
    u.unit_lse.push_back((e / o.width) * lse.width + (e % o.width) / o.head_width);
  return u;
}

} // namespace cpsim::backend
