// PIT's gather and scatter ops as buffer rows. A GATHER op packs, for every fixed tile of the attention op that
// reads its packed buffer, the micro-tiles of the other side holding a visible cell of it (model/micro_tiles.hpp
// decides which, the same function that counts the IR's tiles), one after another, slot by slot: key micro-tiles
// per query tile (K then V) along columns, query micro-tiles per key tile (Q; for the backward also dO, O and the
// LSE) along rows. A SCATTER op sums each gathered gradient row back into its home row (dK, dV; or dQ). The IR's
// packed and index buffer sizes must equal what is planned here.
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

/** The one buffer among `names` whose tensor family is `family`, or -1; UserError when there are several. */
int one_of(const RankExecPlan& rp, const std::vector<std::string>& names, const std::string& family, const std::string& at) {
  int found = -1;
  for (const auto& n : names)
    if (tensor_family(rp.buffer(n).tensor) == family) {
      if (found >= 0)
        throw UserError(at + ": names two '" + family + "' buffers; a gather takes one of each");
      found = rp.buffer_index.at(n);
    }
  return found;
}

/** Where a gather's buffers are, by axis; throws when the op does not name what it needs. */
void find_buffers(const Op& op, const RankExecPlan& rp, const std::string& at, GatherLayout& g) {
  g.index = one_of(rp, op.reads, "index", at);
  g.builds_index = g.index < 0;
  if (g.index < 0)
    g.index = one_of(rp, op.writes, "index", at);
  if (!g.rows) {
    g.src = {one_of(rp, op.reads, "kv", at)};
    g.packed = one_of(rp, op.writes, "kv_packed", at);
    if (g.src[0] < 0 || g.packed < 0 || g.index < 0)
      throw UserError(at + ": a gather of key columns reads a kv buffer and writes a kv_packed buffer, and reads or "
                      "writes an index");
    return;
  }
  g.src = {one_of(rp, op.reads, "q", at)};
  g.packed = one_of(rp, op.writes, "q_packed", at);
  g.packed_lse = one_of(rp, op.writes, "lse_packed", at);
  const int dout = one_of(rp, op.reads, "do", at), out = one_of(rp, op.reads, "o", at);
  g.src_lse = one_of(rp, op.reads, "lse", at);
  const bool backward = dout >= 0 || out >= 0 || g.src_lse >= 0 || g.packed_lse >= 0;
  if (g.src[0] < 0 || g.packed < 0 || g.index < 0 || (backward && (dout < 0 || out < 0 || g.src_lse < 0 || g.packed_lse < 0)))
    throw UserError(at + ": a gather of query rows reads a q buffer and writes a q_packed buffer (for the backward it also "
                    "reads do, o and lse and writes an lse_packed buffer), and reads or writes an index");
  if (backward) {
    g.src.push_back(dout);
    g.src.push_back(out);
  }
  const BufferPlacement& q = rp.buffers[size_t(g.src[0])];
  for (int b : g.src) {
    const BufferPlacement& x = rp.buffers[size_t(b)];
    if (x.tokens != q.tokens || x.head_ids != q.head_ids || x.elem_bytes != 2)
      throw UserError(at + ": its sources '" + q.name + "' and '" + x.name + "' must be bf16 and hold the same rows and heads");
  }
  if (g.src_lse >= 0 && (rp.buffers[size_t(g.src_lse)].tokens != q.tokens || rp.buffers[size_t(g.src_lse)].head_ids != q.head_ids))
    throw UserError(at + ": its lse '" + rp.buffers[size_t(g.src_lse)].name + "' must hold the rows and heads of '" + q.name + "'");
}

} // namespace

void plan_gathers(const Schedule& s, const RankProgram& p, const Workload& w, const MaskGeometry& mask, RankExecPlan& rp) {
  const int per = w.heads / w.kv_heads;
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::COMPUTE || op.compute != ComputeKind::GATHER)
      continue;
    const std::string at = op_where(p.rank, op);
    if (op.granularity <= 0)
      throw UserError(at + ": a gather op needs its micro-tile 'granularity'");
    GatherLayout g;
    g.granularity = op.granularity;
    g.rows = op.gather_rows;
    find_buffers(op, rp, at, g);
    const Op* attn = attention_using(p, rp.buffers[size_t(g.packed)].name, false);
    if (!attn)
      throw UserError(at + ": no attention op reads its packed buffer '" + rp.buffers[size_t(g.packed)].name + "'");
    const BufferPlacement& src = rp.buffers[size_t(g.src[0])];
    // the fixed side: the query tiles' q buffer (columns), the key tiles' kv buffer (rows)
    const BufferPlacement* fixed = nullptr;
    for (const auto& n : attn->reads)
      if (tensor_family(rp.buffer(n).tensor) == (g.rows ? "kv" : "q"))
        fixed = &rp.buffer(n);
    if (!fixed)
      throw UserError(op_where(p.rank, *attn) + ": an attention op over gathered " + (g.rows ? "query rows must read a kv" : "key columns must read a q") +
                      " buffer");
    if (mask.per_head()) {
      g.slot_heads = attn->head_list();
      if (g.rows && per > 1 && attn->dir == Direction::BACKWARD)
        throw UserError(at + ": gathers query rows per head under a per-head mask with " + std::to_string(per) +
                        " query heads per KV head; each head's launch writes (=) its KV head's dK, dV, so they would "
                        "overwrite each other: gather key columns (PIT's 'axis' = \"columns\"), or use kv_heads = heads");
    } else {
      g.slot_heads = {-1};
    }
    g.row_heads = mask.per_head() ? 1 : src.heads;
    g.row_elems = int64_t(g.row_heads) * w.head_dim;
    const int64_t fixed_tile = g.rows ? s.tile_n : s.tile_m;
    g.tiles.resize(g.slot_heads.size());
    for (size_t slot = 0; slot < g.slot_heads.size(); ++slot) {
      const int head = g.slot_heads[slot] < 0 ? attn->head_begin : g.slot_heads[slot];
      const int src_head = g.rows ? head : head / per; // the source holds query heads (rows) or KV heads (columns)
      if (g.slot_heads[slot] >= 0 && src.head_pos(src_head) < 0)
        throw UserError(at + ": its source '" + src.name + "' does not hold " + (g.rows ? "query" : "KV") + " head " +
                        std::to_string(src_head));
      std::vector<std::pair<int, int64_t>> seen;
      for (const AttnSegment& seg : attn->segments) {
        const GatherAxis axis = g.rows ? GatherAxis::QUERIES : GatherAxis::KEYS;
        for (const GatheredTile& t : gathered_micro_tiles(mask, seg.seq, head, seg.q, seg.k, fixed_tile, op.granularity, axis)) {
          GatherLayout::Tile tile;
          tile.seq = seg.seq;
          tile.fixed_pos = t.fixed.begin;
          tile.fixed_n = t.fixed.size();
          tile.fixed_row = first_row(*fixed, seg.seq, t.fixed, at);
          for (const auto& [sq, r] : seen)
            if (sq == seg.seq && r == tile.fixed_pos)
              throw UserError(op_where(p.rank, *attn) + ": two rectangles share " + (g.rows ? "key" : "query") + " tile " +
                              std::to_string(r) + "; a gathered launch takes one range of the other side per tile");
          seen.push_back({seg.seq, tile.fixed_pos});
          tile.packed_row = g.packed_rows;
          tile.index_entry = g.entries;
          tile.candidates = t.candidates;
          tile.span = g.rows ? seg.q : seg.k;
          tile.first_candidate = tile.span.begin / op.granularity;
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
    const int planes = g.rows ? int(g.src.size()) : 2;
    const int64_t packed_bytes = planes * g.packed_rows * g.row_elems * src.elem_bytes;
    if (pk.bytes != packed_bytes)
      throw UserError(at + ": its packed buffer '" + pk.name + "' has " + std::to_string(pk.bytes) + " bytes, but the " +
                      std::to_string(g.packed_rows) + " gathered " + (g.rows ? (planes == 1 ? "Q" : "Q, dO, O") : "K, V") +
                      " rows take " + std::to_string(packed_bytes));
    if (g.packed_lse >= 0 && rp.buffers[size_t(g.packed_lse)].bytes != 4 * g.packed_rows * g.row_heads)
      throw UserError(at + ": its packed lse '" + rp.buffers[size_t(g.packed_lse)].name + "' has " +
                      std::to_string(rp.buffers[size_t(g.packed_lse)].bytes) + " bytes, but the " +
                      std::to_string(g.packed_rows) + " gathered rows take " + std::to_string(4 * g.packed_rows * g.row_heads));
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
      if (const std::string& t = rp.buffer(n).tensor; t == "dkv_packed" || t == "dq_packed")
        sp.src = rp.buffer_index.at(n);
    if (sp.src < 0)
      throw UserError(at + ": a scatter reads gathered gradients (dkv_packed or dq_packed)");
    const bool rows = rp.buffers[size_t(sp.src)].tensor == "dq_packed";
    for (const auto& n : op.writes)
      if (tensor_family(rp.buffer(n).tensor) == (rows ? "dq" : "dkv"))
        sp.dst = rp.buffer_index.at(n);
    if (sp.dst < 0)
      throw UserError(at + ": a scatter of gathered " + (rows ? "dQ rows writes a dq" : "dK, dV rows writes a dkv") + " buffer");
    const Op* attn = attention_using(p, rp.buffers[size_t(sp.src)].name, true);
    if (!attn)
      throw UserError(at + ": no attention op writes its gathered gradients '" + rp.buffers[size_t(sp.src)].name + "'");
    for (const auto& [gid, g] : rp.gathers)
      if (std::find(attn->reads.begin(), attn->reads.end(), rp.buffers[size_t(g.packed)].name) != attn->reads.end())
        sp.gather = gid;
    if (sp.gather < 0 || rp.gathers.at(sp.gather).rows != rows)
      throw UserError(op_where(p.rank, *attn) + ": writes gathered gradients but reads no gathered " + (rows ? "Q" : "K, V"));
    const GatherLayout& g = rp.gathers.at(sp.gather);
    const int64_t grad_bytes = (rows ? 1 : 2) * g.packed_rows * g.row_elems * 2;
    if (rp.buffers[size_t(sp.src)].bytes != grad_bytes)
      throw UserError(at + ": its gradients '" + rp.buffers[size_t(sp.src)].name + "' have " +
                      std::to_string(rp.buffers[size_t(sp.src)].bytes) + " bytes, but the gathered rows take " +
                      std::to_string(grad_bytes));
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
