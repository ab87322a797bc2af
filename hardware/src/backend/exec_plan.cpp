// Slots, issue order, events, communicators and attention rectangles of the exec plan. Buffer
// placement and collective pieces live in buffer_plan.cpp.
#include "cpsim/hardware/backend/exec_plan.hpp"

#include "buffer_plan.hpp"
#include "op_plans.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/execution_graph.hpp"

#include <algorithm>
#include <queue>
#include <set>
#include <tuple>

namespace cpsim::backend {

namespace {

std::string where(int rank, const Op& op) {
  return "rank " + std::to_string(rank) + " op " + std::to_string(op.id) + " ('" + op.label + "')";
}

void check_supported(int rank, const Op& op) {

  if (op.kind == OpKind::COLLECTIVE && op.coll == CollectiveKind::ALL_REDUCE)
    throw UserError(where(rank, op) + ": the GPU backend executes all_to_all, all_gather and reduce_scatter collectives, "
                    "not all_reduce");
  if (op.regions.empty() && ((op.kind == OpKind::SEND && op.reads.size() != 1) || (op.kind == OpKind::RECV && op.writes.size() != 1)))
    throw UserError(where(rank, op) + ": a send/recv without regions must name exactly one buffer");
  if (op.kind == OpKind::COLLECTIVE && (op.reads.size() != 1 || op.writes.size() != 1))
    throw UserError(where(rank, op) + ": a collective must read one buffer and write one buffer");
}

/** Slots in stream order, with the same grouping rule as ExecutionGraph. */
std::vector<Slot> make_slots(const RankProgram& p, size_t n_streams, std::vector<int>& slot_of_op) {
  std::vector<Slot> slots;
  std::vector<int> open(n_streams, -1), open_group(n_streams, -2);
  slot_of_op.assign(p.ops.size(), -1);
  for (const Op& op : p.ops) {
    auto st = size_t(op.stream);
    if (op.group >= 0 && open[st] >= 0 && open_group[st] == op.group) {
      slots[size_t(open[st])].ops.push_back(op.id);
    } else {
      slots.push_back({op.stream, {op.id}, {}, false});
      open[st] = int(slots.size()) - 1;
      open_group[st] = op.group < 0 ? -2 : op.group;
    }
    slot_of_op[size_t(op.id)] = open[st];
    if (op.group < 0)
      open[st] = -1;
  }
  return slots;
}

/** Kahn's order over slots, earliest first op first, so host issue never waits on an event not yet recorded. */
std::vector<int> issue_order(int rank, const std::vector<std::set<int>>& slot_preds) {
  const size_t n = slot_preds.size();
  std::vector<int> indeg(n, 0);
  std::vector<std::vector<int>> succ(n);
  for (size_t b = 0; b < n; ++b)
    for (int a : slot_preds[b]) {
      succ[size_t(a)].push_back(int(b));
      ++indeg[b];
    }
  std::priority_queue<int, std::vector<int>, std::greater<>> ready;
  for (size_t i = 0; i < n; ++i)
    if (indeg[i] == 0)
      ready.push(int(i));
  std::vector<int> order;
  while (!ready.empty()) {
    int a = ready.top();
    ready.pop();
    order.push_back(a);
    for (int b : succ[size_t(a)])
      if (--indeg[size_t(b)] == 0)
        ready.push(b);
  }
  if (order.size() != n)
    throw UserError("rank " + std::to_string(rank) + ": the grouped ops form a dependency cycle; no issue order exists");
  return order;
}

int comm_index(std::vector<CommSpec>& comms, CommSpec c) {
  auto it = std::find(comms.begin(), comms.end(), c);
  if (it != comms.end())
    return int(it - comms.begin());
  comms.push_back(std::move(c));
  return int(comms.size()) - 1;
}

/** NCCL matches the sends of one pair on one communicator in posting order: the two sides must agree. */
void check_p2p_order(const Schedule& s, const ExecPlan& plan) {
  // (comm, from, to) -> (tag, bytes, element bytes of the buffer sent from or received into), in posting order
  std::map<std::tuple<int, int, int>, std::vector<std::tuple<int, int64_t, int>>> sends, recvs;
  for (const RankExecPlan& rp : plan.ranks)
    for (const Slot& sl : rp.slots)
      for (int id : sl.ops) {
        const Op& op = s.ranks[size_t(rp.rank)].ops[size_t(id)];
        int c = rp.comm_of_op[size_t(id)];
        if (op.kind == OpKind::SEND)
          sends[{c, rp.rank, op.peer}].push_back({op.tag, op.bytes, rp.buffer(op.reads.at(0)).elem_bytes});
        else if (op.kind == OpKind::RECV)
          recvs[{c, op.peer, rp.rank}].push_back({op.tag, op.bytes, rp.buffer(op.writes.at(0)).elem_bytes});
      }
  for (const auto& [key, seq] : sends) {
    const auto& got = recvs[key];
    const std::string pair = "rank " + std::to_string(std::get<1>(key)) + " to rank " + std::to_string(std::get<2>(key));
    for (size_t i = 0; i < seq.size() && i < got.size(); ++i)
      if (std::get<0>(seq[i]) == std::get<0>(got[i]) && std::get<1>(seq[i]) == std::get<1>(got[i]) &&
          std::get<2>(seq[i]) != std::get<2>(got[i]))
        throw UserError("the send from " + pair + " with tag " + std::to_string(std::get<0>(seq[i])) + " moves " +
                        (std::get<2>(seq[i]) == 4 ? "fp32" : "bf16") + " elements into a " +
                        (std::get<2>(got[i]) == 4 ? "fp32" : "bf16") +
                        " buffer: NCCL moves bytes, so the plan needs a cast before the send");
    if (got != seq)
      throw UserError("sends from " + pair + " on stream '" + s.streams[size_t(plan.comms[size_t(std::get<0>(key))].stream)].name +
                      "' are posted in another order than the receives: NCCL would pair them wrongly or hang");
  }
}

/**
 * Fills rp.zero_before: the first op (in issue order) that writes each accumulator or dK/dV buffer, when that is an
 * attention op or a backward merge adding into the buffer in place (TE all-gather's full-length dK/dV).
 */
void plan_zeroing(const RankProgram& p, RankExecPlan& rp) {
  std::vector<bool> written(rp.buffers.size(), false);
  for (const Slot& sl : rp.slots)
    for (int id : sl.ops) {
      const Op& op = p.ops[size_t(id)];
      const bool in_place_merge = op.kind == OpKind::MERGE && op.dir == Direction::BACKWARD;
      for (const auto& n : op.writes) {
        const int b = rp.buffer_index.at(n);
        if (written[size_t(b)])
          continue;
        written[size_t(b)] = true; // only the first writer (a receive fills what a later merge adds to)
        const std::string& t = rp.buffers[size_t(b)].tensor;
        const std::string f = tensor_family(t);
        const bool acc = t != f, grad_kv = f == "dkv" || f == "dk" || f == "dv";
        if ((op.kind == OpKind::ATTENTION && (acc || grad_kv)) || (in_place_merge && in_place(op, n)))
          rp.zero_before[id].push_back(b);
      }
    }
}
/** Fills rp.merge_adds: for a backward merge that reads a buffer it writes, every other read of that tensor family
 *  is added into it row by row, matched by token (the buffers may hold different token ranges). */
void plan_merge_adds(const RankProgram& p, RankExecPlan& rp) {
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::MERGE || op.dir != Direction::BACKWARD)
      continue;
    for (const auto& n : op.writes) {
      if (!in_place(op, n))
        continue;
      const int d = rp.buffer_index.at(n);
      const BufferPlacement& dst = rp.buffers[size_t(d)];
      for (const auto& r : op.reads) {
        const int sidx = rp.buffer_index.at(r);
        const BufferPlacement& src = rp.buffers[size_t(sidx)];
        if (r == n || tensor_family(src.tensor) != tensor_family(dst.tensor))
          continue;
        if (src.planes != dst.planes || src.head_width != dst.head_width)
          throw UserError(where(p.rank, op) + ": adds '" + r + "' into '" + n + "', whose planes or rows differ");
        for (const RowBlock& blk : shared_rows(src.tokens, dst.tokens))
          for (const HeadRun& h : head_runs(src, dst))
            rp.merge_adds[op.id].push_back({sidx, d, blk, h.src_pos, h.dst_pos, h.n});
      }
    }
  }
}
/** Fills rp.copies for COPY ops: every written buffer receives the rows and heads it shares with the read buffers of its
 *  tensor, each (row, head) from the first read buffer holding it; read + write of them must be the op's bytes. */
void plan_copies(const RankProgram& p, RankExecPlan& rp) {
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::COMPUTE || op.compute != ComputeKind::COPY)
      continue;
    int64_t moved = 0;
    for (const auto& n : op.writes) {
      const int d = rp.buffer_index.at(n);
      const BufferPlacement& dst = rp.buffers[size_t(d)];
      std::vector<bool> seen(size_t(dst.rows * dst.heads), false);
      for (const auto& r : op.reads) {
        const int sidx = rp.buffer_index.at(r);
        const BufferPlacement& src = rp.buffers[size_t(sidx)];
        if (tensor_family(src.tensor) != tensor_family(dst.tensor))
          continue;
        if (src.planes != dst.planes || src.head_width != dst.head_width || src.elem_bytes != dst.elem_bytes)
          throw UserError(where(p.rank, op) + ": copies '" + r + "' into '" + n + "', whose rows differ in layout or type");
        for (const RowBlock& blk : shared_rows(src.tokens, dst.tokens))
          for (const HeadRun& h : head_runs(src, dst))
            for (int64_t x = 0; x < blk.rows;) { // rows an earlier source already gave are skipped: the first source wins
              auto filled = [&](int64_t row) { return bool(seen[size_t((blk.dst_row + row * blk.dst_step) * dst.heads + h.dst_pos)]); };
              if (filled(x)) {
                ++x;
                continue;
              }
              int64_t end = x;
              while (end < blk.rows && !filled(end)) {
                for (int y = 0; y < h.n; ++y)
                  seen[size_t((blk.dst_row + end * blk.dst_step) * dst.heads + h.dst_pos + y)] = true;
                ++end;
              }
              const RowBlock part{blk.src_row + x * blk.src_step, blk.src_step, blk.dst_row + x * blk.dst_step, blk.dst_step, end - x};
              rp.copies[op.id].push_back({sidx, d, part, h.src_pos, h.dst_pos, h.n});
              moved += part.rows * h.n * dst.head_width * dst.elem_bytes * dst.planes;
              x = end;
            }
      }
    }
    if (2 * moved != op.bytes)
      throw UserError(where(p.rank, op) + ": copies " + std::to_string(moved) + " bytes (read and written: " +
                      std::to_string(2 * moved) + "), but the op says " + std::to_string(op.bytes));
  }
}
} // namespace

ExecPlan make_exec_plan(const Schedule& s, const Workload& w) {
  validate_schedule(s);
  ExecutionGraph g(s);
  const MaskGeometry mask(w);
  ExecPlan plan;
  std::vector<int> world(size_t(s.world));
  for (int r = 0; r < s.world; ++r)
    world[size_t(r)] = r;
  for (const RankProgram& p : s.ranks) {
    RankExecPlan rp;
    rp.rank = p.rank;
    for (const Op& op : p.ops)
      check_supported(p.rank, op);
    std::vector<Slot> slots = make_slots(p, s.streams.size(), rp.slot_of_op);
    std::vector<std::set<int>> slot_preds(slots.size());
    for (const Op& op : p.ops)
      for (int d : g.preds(p.rank, op.id)) {
        int a = rp.slot_of_op[size_t(d)], b = rp.slot_of_op[size_t(op.id)];
        if (a != b)
          slot_preds[size_t(b)].insert(a);
      }
    std::vector<int> order = issue_order(p.rank, slot_preds);
    std::vector<int> new_index(slots.size());
    for (size_t i = 0; i < order.size(); ++i)
      new_index[size_t(order[i])] = int(i);
    for (size_t i = 0; i < order.size(); ++i) {
      Slot sl = slots[size_t(order[i])];
      for (int a : slot_preds[size_t(order[i])])
        if (slots[size_t(a)].stream != sl.stream)
          sl.wait_slots.push_back(new_index[size_t(a)]);
      std::sort(sl.wait_slots.begin(), sl.wait_slots.end());
      rp.slots.push_back(std::move(sl));
    }
    for (const Slot& sl : rp.slots)
      for (int a : sl.wait_slots)
        rp.slots[size_t(a)].record_event = true;
    for (size_t i = 0; i < rp.slots.size(); ++i)
      for (int id : rp.slots[i].ops)
        rp.slot_of_op[size_t(id)] = int(i);

    rp.comm_of_op.assign(p.ops.size(), -1);
    for (const Op& op : p.ops) {
      if (op.kind == OpKind::SEND || op.kind == OpKind::RECV)
        rp.comm_of_op[size_t(op.id)] = comm_index(plan.comms, {op.stream, world});
      else if (op.kind == OpKind::COLLECTIVE)
        rp.comm_of_op[size_t(op.id)] = comm_index(plan.comms, {op.stream, op.coll_group});
    }
    place_buffers(s, w, g, rp);
    plan_gathers(s, p, w, mask, rp);
    plan_launches(p, w, mask, rp);
    plan_predictors(p, w, rp);
    plan_messages(p, rp);
    plan_zeroing(p, rp);
    plan_merge_adds(p, rp);
    plan_copies(p, rp);
    plan_forward_merges(p, rp);
    plan.ranks.push_back(std::move(rp));
  }
  plan_collectives(s, w, plan);
  check_p2p_order(s, plan);
  return plan;
}

int64_t row_of(const std::vector<TokenSlice>& slices, int seq, int64_t pos) {
  int64_t row0 = 0;
  for (const TokenSlice& s : slices) {
    const TokenRange& r = s.range;
    if (s.seq == seq && pos >= r.begin && pos < r.end && (pos - r.begin) % r.stride == 0)
      return row0 + (pos - r.begin) / r.stride;
    row0 += r.size();
  }
  return -1;
}

bool intersect_rows(const TokenRange& a, int64_t a_row0, const TokenRange& b, int64_t b_row0, RowBlock& out) {
  auto ceil_div = [](int64_t x, int64_t y) { return x <= 0 ? 0 : (x + y - 1) / y; };
  if (a.size() == 0 || b.size() == 0)
    return false;
  if (a.stride == b.stride) {
    if ((a.begin - b.begin) % a.stride != 0)
      return false;
    int64_t lo = std::max(a.begin, b.begin), hi = std::min(a.last(), b.last());
    if (lo > hi)
      return false;
    out = {a_row0 + (lo - a.begin) / a.stride, 1, b_row0 + (lo - b.begin) / b.stride, 1, (hi - lo) / a.stride + 1};
    return true;
  }
  if (b.stride == 1 || a.stride == 1) {
    const bool a_strided = b.stride == 1;
    const TokenRange& st = a_strided ? a : b; // strided side
    const TokenRange& ct = a_strided ? b : a; // contiguous side
    int64_t i0 = ceil_div(ct.begin - st.begin, st.stride);
    int64_t i1 = std::min(st.size(), ceil_div(ct.end - st.begin, st.stride));
    if (i0 >= i1)
      return false;
    int64_t srow = (a_strided ? a_row0 : b_row0) + i0, crow = (a_strided ? b_row0 : a_row0) + (st.at(i0) - ct.begin);
    out = a_strided ? RowBlock{srow, 1, crow, st.stride, i1 - i0} : RowBlock{crow, st.stride, srow, 1, i1 - i0};
    return true;
  }
  throw UserError("token slices with strides " + std::to_string(a.stride) + " and " + std::to_string(b.stride) +
                  " cannot be moved row by row by the GPU backend");
}

} // namespace cpsim::backend
