// Device memory of one rank as a static arena: every IR buffer gets an offset, and two buffers share
// bytes only when the IR orders every use of one before every use of the other (happens-before over
// slots), so concurrent streams can never overwrite each other. The arena's size beside the memory
// model's predicted peak shows what the plan's lifetimes cost on a real allocator.
#include "buffer_plan.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/memory_model.hpp"

#include <algorithm>
#include <set>

namespace cpsim::backend {

namespace {
constexpr int64_t kAlign = 256;

int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

int dtype_bytes(const std::string& d) { return d == "bf16" ? 2 : d == "fp64" ? 8 : 4; }

BufferPlacement describe(int rank, const Buffer& b, const Workload& w) {
  BufferPlacement p;
  p.name = b.name;
  p.tensor = b.tensor;
  p.bytes = b.bytes;
  p.head_ids = b.head_list();
  p.head_begin = p.head_ids.empty() ? b.head_begin : p.head_ids.front();
  p.heads = int(p.head_ids.size());
  p.tokens = b.tokens;
  p.rows = b.rows();
  p.planes = tensor_planes(b.tensor);
  const std::string where = "rank " + std::to_string(rank) + " buffer '" + b.name + "': ";
  if (!b.dtype.empty()) { // elements per head follow from the bytes
    p.elem_bytes = dtype_bytes(b.dtype);
    const int64_t unit = buffer_unit_bytes(b);
    if (p.rows > 0 && (unit < 0 || unit % p.elem_bytes != 0))
      throw UserError(where + std::to_string(b.bytes) + " bytes do not divide into " + std::to_string(p.rows) + " tokens x " +
                      std::to_string(p.heads) + " heads of " + b.dtype + " elements");
    p.head_width = p.rows > 0 ? unit / p.elem_bytes : 0;
    p.width = p.head_width * p.heads;
    return p;
  }
  p.head_width = is_lse(b.tensor) ? 1 : w.head_dim;
  p.width = p.heads * p.head_width;
  const int64_t elems = p.rows * p.width * p.planes;
  if (b.bytes == 0 || elems == 0) {
    p.elem_bytes = w.elem_bytes();
    return p;
  }
  if (b.bytes % elems != 0 || (b.bytes / elems != 2 && b.bytes / elems != 4))
    throw UserError(where + std::to_string(b.bytes) + " bytes for " + std::to_string(elems) + " elements (" +
                    std::to_string(p.rows) + " tokens x " + std::to_string(p.heads) + " heads): not bf16 or fp32");
  p.elem_bytes = int(b.bytes / elems);
  return p;
}

/**
 * The buffer each check compares; a result must outlive the program, so it is pinned. What a training step hands
 * on is a buffer no later op reads (USP's dQ after the reverse all-to-all, not the head-sharded dq_h it came from);
 * without such a sink the last declared candidate wins (accumulators of later steps are declared later).
 */
void find_results(const RankProgram& p, const std::vector<bool>& written, RankExecPlan& rp) {
  std::vector<bool> read_on(p.buffers.size(), false); // read by an op that does not also write it
  for (const Op& op : p.ops)
    for (const auto& n : op.reads)
      if (!in_place(op, n))
        read_on[size_t(rp.buffer_index.at(n))] = true;
  auto pick = [&](const std::string& key, std::initializer_list<const char*> tensors, bool need_whole) {
    int best = -1, best_sink = -1;
    for (size_t i = 0; i < p.buffers.size(); ++i) {
      const Buffer& b = p.buffers[i];
      bool match = std::any_of(tensors.begin(), tensors.end(), [&](const char* t) { return b.tensor == t; });
      if (match && written[i] && b.bytes > 0 && (!need_whole || b.free_op < 0)) {
        best = int(i);
        if (!read_on[i])
          best_sink = int(i);
      }
    }
    if (best_sink >= 0)
      best = best_sink;
    if (best >= 0)
      rp.results[key] = best;
    return best >= 0;
  };
  pick("o", {"o"}, true);
  pick("lse", {"lse"}, true);
  if (!pick("dq", {"dq"}, true))
    pick("dq", {"dq_acc"}, false);
  pick("dk", {"dk"}, true);
  pick("dv", {"dv"}, true);
  if (!rp.results.count("dk") && !pick("dkv", {"dkv"}, true))
    pick("dkv", {"dkv_acc"}, false);
}
} // namespace

bool is_two_plane(const std::string& t) { return tensor_planes(t) == 2; }

int input_tensor_id(const std::string& t, int plane) {
  if (t == "q")
    return 1;
  if (t == "kv")
    return plane == 0 ? 2 : 3;
  if (t == "k")
    return 2;
  if (t == "v")
    return 3;
  if (t == "do")
    return 4;
  return 0;
}

std::vector<int> input_buffers(const RankProgram& p, const RankExecPlan& rp) {
  std::vector<bool> written(rp.buffers.size(), false);
  for (const Op& op : p.ops)
    for (const auto& n : op.writes)
      written[size_t(rp.buffer_index.at(n))] = true;
  std::vector<int> out;
  for (size_t b = 0; b < rp.buffers.size(); ++b)
    if (!written[b] && p.buffers[b].alloc_op < 0 && rp.buffers[b].bytes > 0 && input_tensor_id(rp.buffers[b].tensor, 0) != 0)
      out.push_back(int(b));
  return out;
}
bool is_lse(const std::string& t) { return t == "lse" || t == "lse_acc"; }
std::string tensor_family(const std::string& t) {
  return t.size() > 4 && t.compare(t.size() - 4, 4, "_acc") == 0 ? t.substr(0, t.size() - 4) : t;
}
bool in_place(const Op& op, const std::string& buffer) {
  return std::find(op.reads.begin(), op.reads.end(), buffer) != op.reads.end() &&
         std::find(op.writes.begin(), op.writes.end(), buffer) != op.writes.end();
}
std::vector<RowBlock> shared_rows(const std::vector<TokenSlice>& src, const std::vector<TokenSlice>& dst) {
  std::vector<RowBlock> out;
  int64_t drow = 0;
  for (const TokenSlice& d : dst) {
    int64_t srow = 0;
    for (const TokenSlice& sl : src) {
      RowBlock blk;
      if (sl.seq == d.seq && intersect_rows(sl.range, srow, d.range, drow, blk))
        out.push_back(blk);
      srow += sl.range.size();
    }
    drow += d.range.size();
  }
  return out;
}

int BufferPlacement::head_pos(int h) const {
  auto it = std::lower_bound(head_ids.begin(), head_ids.end(), h);
  return it != head_ids.end() && *it == h ? int(it - head_ids.begin()) : -1;
}

std::vector<HeadRun> head_runs(const BufferPlacement& a, const BufferPlacement& b) {
  std::vector<HeadRun> out;
  for (int i = 0; i < a.heads; ++i) {
    const int j = b.head_pos(a.head_ids[size_t(i)]);
    if (j < 0)
      continue;
    if (!out.empty() && out.back().src_pos + out.back().n == i && out.back().dst_pos + out.back().n == j)
      ++out.back().n;
    else
      out.push_back({i, j, 1});
  }
  return out;
}

void place_buffers(const Schedule& s, const Workload& w, const ExecutionGraph& g, RankExecPlan& rp) {
  const RankProgram& p = s.ranks[size_t(rp.rank)];
  const size_t n_slots = rp.slots.size(), n_bufs = p.buffers.size();
  std::vector<bool> written(n_bufs, false), touched(n_bufs, false);
  std::vector<std::set<int>> users(n_bufs);
  for (size_t i = 0; i < n_bufs; ++i) {
    rp.buffers.push_back(describe(rp.rank, p.buffers[i], w));
    rp.buffer_index[p.buffers[i].name] = int(i);
    for (int op : {p.buffers[i].alloc_op, p.buffers[i].free_op})
      if (op >= 0)
        users[i].insert(rp.slot_of_op[size_t(op)]);
  }
  for (const Op& op : p.ops) {
    for (const auto& n : op.reads) {
      users[size_t(rp.buffer_index.at(n))].insert(rp.slot_of_op[size_t(op.id)]);
      touched[size_t(rp.buffer_index.at(n))] = true;
    }
    for (const auto& n : op.writes) {
      users[size_t(rp.buffer_index.at(n))].insert(rp.slot_of_op[size_t(op.id)]);
      touched[size_t(rp.buffer_index.at(n))] = written[size_t(rp.buffer_index.at(n))] = true;
    }
  }
  find_results(p, written, rp);
  for (const auto& [key, i] : rp.results)
    rp.buffers[size_t(i)].pinned = true;
  for (size_t i = 0; i < n_bufs; ++i) {
    if (p.buffers[i].alloc_op < 0 || p.buffers[i].free_op < 0)
      rp.buffers[i].pinned = true;
    if (touched[i])
      rp.working_set_bytes += p.buffers[i].bytes;
  }

  // ancestors of each slot (slots are in issue order, a topological order)
  std::vector<std::vector<bool>> anc(n_slots, std::vector<bool>(n_slots, false));
  for (size_t b = 0; b < n_slots; ++b)
    for (int id : rp.slots[b].ops)
      for (int d : g.preds(rp.rank, id)) {
        size_t a = size_t(rp.slot_of_op[size_t(d)]);
        if (a == b)
          continue;
        anc[b][a] = true;
        for (size_t x = 0; x < n_slots; ++x)
          if (anc[a][x])
            anc[b][x] = true;
      }
  auto before = [&](size_t x, size_t y) { // every use of x happens before every use of y
    for (int v : users[y])
      for (int u : users[x])
        if (!anc[size_t(v)][size_t(u)])
          return false;
    return true;
  };

  std::vector<size_t> order(n_bufs);
  for (size_t i = 0; i < n_bufs; ++i)
    order[i] = i;
  auto first_use = [&](size_t i) { return users[i].empty() ? -1 : *users[i].begin(); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (rp.buffers[a].pinned != rp.buffers[b].pinned)
      return rp.buffers[a].pinned;
    return first_use(a) < first_use(b);
  });
  std::vector<size_t> placed;
  for (size_t i : order) {
    BufferPlacement& bp = rp.buffers[i];
    if (bp.bytes == 0)
      continue;
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t j : placed) {
      const BufferPlacement& o = rp.buffers[j];
      bool may_share = !bp.pinned && !o.pinned && (before(i, j) || before(j, i));
      if (!may_share)
        busy.push_back({o.offset_bytes, o.offset_bytes + align_up(o.bytes)});
    }
    std::sort(busy.begin(), busy.end());
    int64_t at = 0;
    for (const auto& [lo, hi] : busy) {
      if (at + bp.bytes <= lo)
        break;
      at = std::max(at, hi);
    }
    bp.offset_bytes = at;
    rp.arena_bytes = std::max(rp.arena_bytes, at + align_up(bp.bytes));
    placed.push_back(i);
  }
  rp.predicted_peak_bytes = rank_memory(p).peak_bytes;
}

namespace {
/**
 * Pieces landing on destination cells an earlier piece wrote (local pieces first, then received ones, in order) add
 * to them: the gradients of a replicated head (Ulysses with fewer KV heads than ranks), summed as autograd sums
 * the repeats. Anything else landing twice is refused.
 */
void mark_overlaps(CollectivePlan& cp, const BufferPlacement& dst, const std::string& where) {
  const std::string f = tensor_family(dst.tensor);
  const bool gradient = f == "dq" || f == "dk" || f == "dv" || f == "dkv";
  std::vector<bool> covered(size_t(dst.rows * dst.heads), false);
  for (auto* list : {&cp.local, &cp.recvs})
    for (CollectivePiece& pc : *list) {
      int64_t hit = 0, cells = 0;
      for (int64_t i = 0; i < pc.block.rows; ++i)
        for (int h = 0; h < pc.heads; ++h, ++cells) {
          std::vector<bool>::reference c = covered[size_t((pc.block.dst_row + i * pc.block.dst_step) * dst.heads + pc.dst_head_offset + h)];
          hit += c ? 1 : 0;
          c = true;
        }
      if (hit > 0 && (hit != cells || !gradient))
        throw UserError(where + ": pieces from two ranks land on the same rows and heads of '" + dst.name + "'" +
                        (gradient ? ", but not as one whole piece" : ", which is not a gradient that sums them"));
      pc.add = hit > 0;
    }
}
} // namespace

void plan_collectives(const Schedule& s, const Workload& w, ExecPlan& plan) {
  (void)w;
  auto partner_buffers = [&](int rank, int tag) -> const Op& {
    for (const Op& op : s.ranks[size_t(rank)].ops)
      if (op.kind == OpKind::COLLECTIVE && op.tag == tag)
        return op;
    throw UserError("rank " + std::to_string(rank) + " has no collective with tag " + std::to_string(tag));
  };
  auto pieces = [](const BufferPlacement& src, const BufferPlacement& dst, int peer, int planes, std::vector<CollectivePiece>& out) {
    // an fp32 accumulator may feed a bf16 buffer (converted on packing); planes and row layout must agree
    if (src.planes != dst.planes || src.head_width != dst.head_width)
      throw UserError("collective from '" + src.name + "' to '" + dst.name + "': the buffers differ in layout");
    int64_t bytes = 0;
    const std::vector<HeadRun> runs = head_runs(src, dst);
    for (const RowBlock& blk : shared_rows(src.tokens, dst.tokens))
      for (const HeadRun& h : runs) {
        out.push_back({peer, blk, h.src_pos, h.dst_pos, h.n});
        bytes += blk.rows * h.n * src.head_width * dst.elem_bytes * planes; // wire type
      }
    return bytes;
  };
  for (RankExecPlan& rp : plan.ranks) {
    std::map<int, int64_t> stream_need;
    std::map<int, int> stream_of_coll;
    for (const Op& op : s.ranks[size_t(rp.rank)].ops) {
      if (op.kind != OpKind::COLLECTIVE)
        continue;
      CollectivePlan cp;
      cp.src = rp.buffer_index.at(op.reads[0]);
      cp.dst = rp.buffer_index.at(op.writes[0]);
      const BufferPlacement &src = rp.buffers[size_t(cp.src)], &dst = rp.buffers[size_t(cp.dst)];
      if (op.plane >= 0 && src.planes != 2)
        throw UserError("rank " + std::to_string(rp.rank) + " op " + std::to_string(op.id) + " ('" + op.label + "'): 'plane' " +
                        std::to_string(op.plane) + " names one half of a K-then-V buffer, but '" + src.name + "' has one plane");
      cp.reduce = op.coll == CollectiveKind::REDUCE_SCATTER;
      cp.plane_begin = op.plane >= 0 ? op.plane : 0;
      cp.plane_end = op.plane >= 0 ? op.plane + 1 : src.planes;
      const int planes = cp.plane_end - cp.plane_begin;
      for (int peer : op.coll_group) {
        const Op& po = partner_buffers(peer, op.tag);
        const RankExecPlan& pr = plan.ranks[size_t(peer)];
        if (peer == rp.rank) {
          pieces(src, dst, peer, planes, cp.local);
          continue;
        }
        cp.send_bytes += pieces(src, pr.buffer(po.writes[0]), peer, planes, cp.sends);
        cp.recv_bytes += pieces(pr.buffer(po.reads[0]), dst, peer, planes, cp.recvs);
      }
      if (!cp.reduce) // a reduce-scatter adds every received piece anyway
        mark_overlaps(cp, dst, "rank " + std::to_string(rp.rank) + " op " + std::to_string(op.id) + " ('" + op.label + "')");
      if (cp.reduce) { // the sum starts from the rank's own piece, which must cover every destination row
        int64_t own = 0;
        for (const auto& pc : cp.local)
          own += pc.block.rows * pc.heads;
        if (own != dst.rows * dst.heads)
          throw UserError("rank " + std::to_string(rp.rank) + " op " + std::to_string(op.id) + " ('" + op.label +
                          "'): a reduce-scatter whose source does not hold every row and head of its destination '" +
                          dst.name + "' has nothing to start the sum from");
      }
      stream_need[op.stream] = std::max(stream_need[op.stream], cp.send_bytes + cp.recv_bytes);
      stream_of_coll[op.id] = op.stream;
      rp.collectives[op.id] = std::move(cp);
    }
    std::map<int, int64_t> stream_offset;
    for (const auto& [stream, need] : stream_need) {
      stream_offset[stream] = rp.staging_bytes;
      rp.staging_bytes += align_up(need);
    }
    for (auto& [id, cp] : rp.collectives)
      cp.staging_offset_bytes = stream_offset[stream_of_coll[id]];
  }
}

} // namespace cpsim::backend
