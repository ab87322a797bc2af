// Forward merges as buffer rows. The two-way merge into o_acc/lse_acc (ring schedules) stays the executor's own;
// TE p2p's deferred correction is an LSE fold per step and an output correction per step, rows matched by token
// (a step's partial may hold only the second half of the rows); the n-way merge of CQS and DCP pairs each partial
// O with the LSE read right after it, finds for every output row the partials holding its token, and merges the
// rows whose partial count is the op's `inputs` in runs the kernels' merge_lse takes; PIT's scatter-merge along query
// rows takes every packed partial row back to the output row it was gathered from.
#include "op_plans.hpp"

#include "buffer_plan.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <set>

namespace cpsim::backend {

namespace {

bool family(const BufferPlacement& b, const char* f) { return tensor_family(b.tensor) == f; }

/** PIT's scatter-merge: the gather that laid the partials out (the one the attention writing them read), and the
 *  output row of every gathered micro-tile. */
void plan_packed_merge(const RankProgram& p, const Op& op, int part_o, int part_lse, int out, int lse_out,
                       const RankExecPlan& rp, ForwardMerge& m) {
  const std::string at = op_where(p.rank, op);
  m.kind = ForwardMerge::PACKED;
  m.part_o = part_o;
  m.part_lse = part_lse;
  m.out = out;
  m.lse_out = lse_out;
  if (part_lse < 0 || out < 0 || lse_out < 0)
    throw UserError(at + ": a scatter-merge of packed partials reads o_packed and lse_packed and writes o and lse");
  const BufferPlacement &o = rp.buffers[size_t(out)], &l = rp.buffers[size_t(lse_out)];
  if (o.tokens != l.tokens || o.head_ids != l.head_ids)
    throw UserError(at + ": its outputs '" + o.name + "' and '" + l.name + "' must hold the same rows and heads");
  for (const Op& a : p.ops)
    if (a.kind == OpKind::ATTENTION && std::find(a.writes.begin(), a.writes.end(), rp.buffers[size_t(part_o)].name) != a.writes.end())
      if (auto it = rp.launches.find(a.id); it != rp.launches.end() && !it->second.empty())
        m.gather = it->second.front().gather;
  if (m.gather < 0 || !rp.gathers.at(m.gather).rows)
    throw UserError(at + ": no attention over gathered query rows writes its partials '" + rp.buffers[size_t(part_o)].name + "'");
  const GatherLayout& g = rp.gathers.at(m.gather);
  const BufferPlacement &po = rp.buffers[size_t(part_o)], &pl = rp.buffers[size_t(part_lse)];
  if (po.bytes != g.packed_rows * g.row_elems * 2 || pl.bytes != 4 * g.packed_rows * g.row_heads)
    throw UserError(at + ": its partials '" + po.name + "' (" + std::to_string(po.bytes) + " bytes) and '" + pl.name + "' (" +
                    std::to_string(pl.bytes) + ") do not hold one bf16 O and one fp32 LSE per gathered row (" +
                    std::to_string(g.packed_rows) + " rows of " + std::to_string(g.row_heads) + " heads)");
  if (g.packed_rows * g.row_heads / (op.head_end - op.head_begin) != op.rows) // the IR counts rows of every head
    throw UserError(at + ": merges " + std::to_string(op.rows) + " rows of every head, but the gather packed " +
                    std::to_string(g.packed_rows) + " rows of " + std::to_string(g.row_heads) + " heads");
  m.home_row.resize(g.tiles.size());
  for (size_t slot = 0; slot < g.tiles.size(); ++slot)
    for (const auto& t : g.tiles[slot]) {
      m.home_row[slot].emplace_back();
      for (const TokenRange& mt : t.micro) {
        const int64_t row = row_of(o.tokens, t.seq, mt.begin);
        if (row < 0 || row_of(o.tokens, t.seq, mt.end - 1) != row + mt.size() - 1)
          throw UserError(at + ": its output '" + o.name + "' does not hold tokens [" + std::to_string(mt.begin) + ", " +
                          std::to_string(mt.end) + ") of sequence " + std::to_string(t.seq) + " as consecutive rows");
        m.home_row[slot].back().push_back(row);
      }
    }
}

} // namespace

void plan_forward_merges(const RankProgram& p, RankExecPlan& rp) {
  std::set<int> folded, corrected; // accumulators and outputs an earlier merge (in issue order) already wrote
  std::vector<int> order;
  for (const Slot& sl : rp.slots)
    order.insert(order.end(), sl.ops.begin(), sl.ops.end());
  for (int id : order) {
    const Op& op = p.ops[size_t(id)];
    if (op.kind != OpKind::MERGE || op.dir != Direction::FORWARD)
      continue;
    const std::string at = op_where(p.rank, op);
    auto written = [&](const char* tensor) {
      for (const auto& n : op.writes)
        if (rp.buffer(n).tensor == tensor)
          return rp.buffer_index.at(n);
      return -1;
    };
    auto read = [&](const char* tensor) {
      for (const auto& n : op.reads)
        if (rp.buffer(n).tensor == tensor)
          return rp.buffer_index.at(n);
      return -1;
    };
    if (written("o_acc") >= 0)
      continue; // two-way into o_acc/lse_acc: rank_executor.cpp
    ForwardMerge m;
    if (read("o_packed") >= 0) { // PIT along query rows: packed partials back into their rows
      plan_packed_merge(p, op, read("o_packed"), read("lse_packed"), written("o"), written("lse"), rp, m);
      rp.forward_merges[id] = std::move(m);
      continue;
    }
    const int acc = read("lse_acc");
    if (acc >= 0) { // TE p2p's deferred correction
      m.acc = acc;
      m.part_lse = read("lse");
      m.part_o = read("o");
      m.out = written("o");
      m.kind = m.out >= 0 ? ForwardMerge::OUT_CORRECTION : ForwardMerge::LSE_FOLD;
      if (m.part_lse < 0 || (m.kind == ForwardMerge::OUT_CORRECTION && m.part_o < 0) ||
          (m.kind == ForwardMerge::LSE_FOLD && written("lse_acc") != acc))
        throw UserError(at + ": a correction reads a step's partial lse (and o) and the running lse_acc, and writes "
                        "lse_acc or the output o");
      if (m.kind == ForwardMerge::OUT_CORRECTION && m.part_o == m.out)
        for (const auto& n : op.reads) // the output is read too (it accumulates): the partial is the other o
          if (rp.buffer(n).tensor == "o" && rp.buffer_index.at(n) != m.out)
            m.part_o = rp.buffer_index.at(n);
      m.lse_out = written("lse");
      const BufferPlacement &a = rp.buffers[size_t(m.acc)], &pl = rp.buffers[size_t(m.part_lse)];
      if (a.head_ids != pl.head_ids || (m.part_o >= 0 && rp.buffers[size_t(m.part_o)].tokens != pl.tokens))
        throw UserError(at + ": the partial's o and lse and the running lse_acc must hold the same heads and rows");
      m.blocks = shared_rows(pl.tokens, a.tokens);
      int64_t rows = 0;
      for (const RowBlock& b : m.blocks)
        rows += b.rows;
      if (rows != pl.rows)
        throw UserError(at + ": rows of the partial '" + pl.name + "' are not held by '" + a.name + "'");
      if (m.kind == ForwardMerge::OUT_CORRECTION &&
          (rp.buffers[size_t(m.out)].tokens != a.tokens || rp.buffers[size_t(m.out)].head_ids != a.head_ids))
        throw UserError(at + ": the output and lse_acc must hold the same rows and heads");
      m.first = (m.kind == ForwardMerge::LSE_FOLD ? folded : corrected).insert(m.kind == ForwardMerge::LSE_FOLD ? m.acc : m.out).second;
      rp.forward_merges[id] = std::move(m);
      continue;
    }
    // n-way: partial O buffers, each followed by its LSE, into the written o and lse
    m.kind = ForwardMerge::NWAY;
    m.out = written("o");
    m.lse_out = written("lse");
    if (m.out < 0 || m.lse_out < 0)
      throw UserError(at + ": a forward merge writes o_acc/lse_acc (two-way), lse_acc (a fold) or o and lse (n-way)");
    std::vector<std::pair<int, int>> parts;
    for (size_t i = 0; i < op.reads.size(); ++i) {
      const int b = rp.buffer_index.at(op.reads[i]);
      if (!family(rp.buffers[size_t(b)], "o"))
        continue;
      if (i + 1 >= op.reads.size() || !family(rp.buffer(op.reads[i + 1]), "lse"))
        throw UserError(at + ": partial '" + op.reads[i] + "' must be followed by its lse in the op's reads");
      const int l = rp.buffer_index.at(op.reads[i + 1]);
      if (rp.buffers[size_t(b)].tokens != rp.buffers[size_t(l)].tokens)
        throw UserError(at + ": partial '" + op.reads[i] + "' and its lse hold different rows");
      parts.push_back({b, l});
    }
    const BufferPlacement& out = rp.buffers[size_t(m.out)];
    for (int h = op.head_begin; h < op.head_end; ++h)
      if (out.head_pos(h) < 0 || rp.buffers[size_t(m.lse_out)].head_pos(h) < 0)
        throw UserError(at + ": its output does not hold head " + std::to_string(h));
    int64_t merged = 0;
    int64_t row = 0;
    for (const TokenSlice& t : out.tokens) {
      for (int64_t i = 0; i < t.range.size(); ++i, ++row) {
        std::vector<ForwardMerge::Input> ins;
        for (const auto& [o, l] : parts) {
          const BufferPlacement& bo = rp.buffers[size_t(o)];
          const int pos0 = bo.head_pos(op.head_begin);
          if (pos0 < 0 || bo.head_pos(op.head_end - 1) != pos0 + (op.head_end - 1 - op.head_begin))
            continue; // a partial of other heads (DCP's head blocks)
          const int64_t r = row_of(bo.tokens, t.seq, t.range.at(i));
          if (r >= 0)
            ins.push_back({o, l, r});
        }
        if (int(ins.size()) != op.inputs)
          continue;
        ++merged;
        if (!m.runs.empty()) { // extend the run when the same partials hold the next rows
          ForwardMerge::Run& last = m.runs.back();
          bool same = last.row + last.rows == row && last.inputs.size() == ins.size();
          for (size_t k = 0; same && k < ins.size(); ++k)
            same = last.inputs[k].o == ins[k].o && last.inputs[k].row + last.rows == ins[k].row;
          if (same) {
            ++last.rows;
            continue;
          }
        }
        m.runs.push_back({row, 1, ins});
      }
    }
    if (merged != op.rows)
      throw UserError(at + ": " + std::to_string(merged) + " output rows have exactly " + std::to_string(op.inputs) +
                      " partials among its reads, but the op merges " + std::to_string(op.rows));
    rp.forward_merges[id] = std::move(m);
  }
}

} // namespace cpsim::backend
