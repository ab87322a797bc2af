// PIT's gather and scatter ops as buffer rows. A GATHER op packs, for every query tile of the attention op that
// reads its packed buffer, the key micro-tiles holding a visible cell (model/micro_tiles.hpp decides which, the
// same function that counts the IR's tiles), K then V, slot by slot; a SCATTER op sums each gathered gradient row
// back into its home row. The IR's packed and index buffer sizes must equal what is planned here.
#include "op_plans.hpp"

#include "buffer_plan.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/micro_tiles.hpp"

#include <algorithm>

namespace cpsim::backend {

namespace {

int64_t first_row(const BufferPlacement& b, int seq, const TokenRange& r, const std::string& at) {
  for (int64_t row0 = 0; const TokenSlice& s : b.tokens) {
    if (s.seq == seq && s.range.stride == 1 && r.begin >= s.range.begin && r.end <= s.range.end)
      return row0 + r.begin - s.range.begin;
    row0 += s.range.size();
  }
  throw UserError(at + ": buffer '" + b.name + "' does not hold tokens [" + std::to_string(r.begin) + ", " +
                  std::to_string(r.end) + ") of sequence " + std::to_string(seq) + " as consecutive rows");
}

/** The attention op reading (or writing) `buffer`, first in program order; nullptr if none. */
const Op* attention_using(const RankProgram& p, const std::string& buffer, bool writes) {
  for (const Op& op : p.ops)
    if (op.kind == OpKind::ATTENTION) {
      const auto& names = writes ? op.writes : op.reads;
      if (std::find(names.begin(), names.end(), buffer) != names.end())
        return &op;
    }
  return nullptr;
}

} // namespace

void plan_gathers(const Schedule& s, const RankProgram& p, const Workload& w, const MaskGeometry& mask, RankExecPlan& rp) {
  const int per = w.heads / w.kv_heads;
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::COMPUTE || op.compute != ComputeKind::GATHER)
      continue;
    const std::string at = op_where(p.rank, op);
    if (op.gather_rows)
      throw UserError(at + ": gathers query rows (PIT's 'axis' = \"rows\"); the GPU backend packs key columns only, "
                      "since the kernels cannot scatter partial outputs of packed query rows: plan and simulate it");
    if (op.granularity <= 0)
      throw UserError(at + ": a gather op needs its micro-tile 'granularity'");
    GatherLayout g;
    g.granularity = op.granularity;
    for (const auto& n : op.reads) {
      const BufferPlacement& b = rp.buffer(n);
      if (b.tensor == "kv")
        g.src = rp.buffer_index.at(n);
      else if (b.tensor == "index")
        g.index = rp.buffer_index.at(n);
    }
    g.builds_index = g.index < 0;
    for (const auto& n : op.writes) {
      const BufferPlacement& b = rp.buffer(n);
      if (b.tensor == "kv_packed")
        g.packed = rp.buffer_index.at(n);
      else if (b.tensor == "index")
        g.index = rp.buffer_index.at(n);
    }
    if (g.src < 0 || g.packed < 0 || g.index < 0)
      throw UserError(at + ": a gather reads a kv buffer and writes a kv_packed buffer, and reads or writes an index");
    const Op* attn = attention_using(p, rp.buffers[size_t(g.packed)].name, false);
    if (!attn)
      throw UserError(at + ": no attention op reads its packed buffer '" + rp.buffers[size_t(g.packed)].name + "'");
    const BufferPlacement& src = rp.buffers[size_t(g.src)];
    const BufferPlacement* q = nullptr;
    for (const auto& n : attn->reads)
      if (rp.buffer(n).tensor == "q")
        q = &rp.buffer(n);
    if (!q)
      throw UserError(op_where(p.rank, *attn) + ": an attention op must read a q buffer");
    if (mask.per_head())
      g.slot_heads = attn->head_list();
    else
      g.slot_heads = {-1};
    g.row_elems = mask.per_head() ? w.head_dim : int64_t(src.heads) * w.head_dim;
    g.tiles.resize(g.slot_heads.size());
    for (size_t slot = 0; slot < g.slot_heads.size(); ++slot) {
      const int head = g.slot_heads[slot] < 0 ? attn->head_begin : g.slot_heads[slot];
      if (g.slot_heads[slot] >= 0 && src.head_pos(head / per) < 0)
        throw UserError(at + ": its source '" + src.name + "' does not hold KV head " + std::to_string(head / per));
      std::vector<std::pair<int, int64_t>> q_seen;
      for (const AttnSegment& seg : attn->segments) {
        for (const GatheredTile& t : gathered_micro_tiles(mask, seg.seq, head, seg.q, seg.k, s.tile_m, op.granularity, GatherAxis::KEYS)) {
          GatherLayout::Tile tile;
          tile.seq = seg.seq;
          tile.q_pos = t.fixed.begin;
          tile.q_n = t.fixed.size();
          tile.q_row = first_row(*q, seg.seq, t.fixed, at);
          for (const auto& [sq, r] : q_seen)
            if (sq == seg.seq && r == tile.q_pos)
              throw UserError(op_where(p.rank, *attn) + ": two rectangles share query tile " + std::to_string(r) +
                              "; a gathered launch takes one key range per query tile");
          q_seen.push_back({seg.seq, tile.q_pos});
          tile.packed_row = g.packed_rows;
          tile.index_entry = g.entries;
          tile.candidates = t.candidates;
          tile.first_candidate = seg.k.begin / op.granularity;
          tile.micro = t.micro;
          for (const TokenRange& m : t.micro) {
            tile.src_row.push_back(first_row(src, seg.seq, m, at));
            g.packed_rows += m.size();
          }
          g.entries += int64_t(t.micro.size());
          g.candidates += t.candidates;
          g.tiles[slot].push_back(std::move(tile));
        }
      }
    }
    const BufferPlacement &pk = rp.buffers[size_t(g.packed)], &ix = rp.buffers[size_t(g.index)];
    const int64_t packed_bytes = 2 * g.packed_rows * g.row_elems * src.elem_bytes;
    if (pk.bytes != packed_bytes)
      throw UserError(at + ": its packed buffer '" + pk.name + "' has " + std::to_string(pk.bytes) + " bytes, but the " +
                      std::to_string(g.packed_rows) + " gathered K, V rows take " + std::to_string(packed_bytes));
    if (ix.bytes != 4 * g.entries)
      throw UserError(at + ": its index '" + ix.name + "' has " + std::to_string(ix.bytes) + " bytes for " +
                      std::to_string(g.entries) + " micro-tiles (4 bytes each)");
    rp.gathers[op.id] = std::move(g);
  }

  for (const Op& op : p.ops) {
    if (op.kind != OpKind::COMPUTE || op.compute != ComputeKind::SCATTER)
      continue;
    const std::string at = op_where(p.rank, op);
    ScatterPlan sp;
    for (const auto& n : op.reads)
      if (rp.buffer(n).tensor == "kv_packed")
        sp.src = rp.buffer_index.at(n);
    for (const auto& n : op.writes)
      if (tensor_family(rp.buffer(n).tensor) == "dkv")
        sp.dst = rp.buffer_index.at(n);
    if (sp.src < 0 || sp.dst < 0)
      throw UserError(at + ": a scatter reads gathered gradients (kv_packed) and writes a dkv buffer");
    const Op* attn = attention_using(p, rp.buffers[size_t(sp.src)].name, true);
    if (!attn)
      throw UserError(at + ": no attention op writes its gathered gradients '" + rp.buffers[size_t(sp.src)].name + "'");
    for (const auto& [gid, g] : rp.gathers)
      if (std::find(attn->reads.begin(), attn->reads.end(), rp.buffers[size_t(g.packed)].name) != attn->reads.end())
        sp.gather = gid;
    if (sp.gather < 0)
      throw UserError(op_where(p.rank, *attn) + ": writes gathered gradients but reads no gathered K, V");
    const GatherLayout& g = rp.gathers.at(sp.gather);
    if (rp.buffers[size_t(sp.src)].bytes != rp.buffers[size_t(g.packed)].bytes)
      throw UserError(at + ": its gradients '" + rp.buffers[size_t(sp.src)].name + "' and the gathered K, V differ in size");
    const BufferPlacement& dst = rp.buffers[size_t(sp.dst)];
    sp.home_row.resize(g.tiles.size());
    for (size_t slot = 0; slot < g.tiles.size(); ++slot)
      for (const auto& t : g.tiles[slot]) {
        sp.home_row[slot].emplace_back();
        for (const TokenRange& m : t.micro)
          sp.home_row[slot].back().push_back(first_row(dst, t.seq, m, at));
      }
    rp.scatters[op.id] = std::move(sp);
  }
}

} // namespace cpsim::backend
