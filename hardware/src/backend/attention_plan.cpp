// Kernel launches of attention ops. The kernels take, per launch, one q, k and v tensor and a contiguous run of
// query heads; the IR allows an op whose heads are placed apart (DSV's head placement), whose KV heads live in
// per-group buffers (DSV's gathered K/V) and whose key ranges are held as several token slices (gathered key
// blocks). The op is split into launches per head run, and rectangles into the parts the buffers hold; keys a
// buffer does not hold must be invisible to every head of the run, which is checked here against the mask.
#include "op_plans.hpp"

#include "buffer_plan.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <map>

namespace cpsim::backend {

std::string op_where(int rank, const Op& op) {
  return "rank " + std::to_string(rank) + " op " + std::to_string(op.id) + " ('" + op.label + "')";
}

namespace {

bool q_side(const std::string& f) { return f == "q" || f == "o" || f == "lse" || f == "do" || f == "dq"; }
bool k_side(const std::string& f) { return f == "k" || f == "v" || f == "kv" || f == "dk" || f == "dv" || f == "dkv"; }

/** First row of positions `r` when they are consecutive rows of one slice of `b`, else -1. */
int64_t consecutive_rows(const BufferPlacement& b, int seq, const TokenRange& r) {
  int64_t row0 = 0;
  for (const TokenSlice& s : b.tokens) {
    const int64_t n = s.range.size();
    if (s.seq == seq && r.begin >= s.range.begin && r.last() <= s.range.last() && (r.begin - s.range.begin) % s.range.stride == 0 &&
        (s.range.stride == r.stride || r.size() == 1))
      return row0 + (r.begin - s.range.begin) / s.range.stride;
    row0 += n;
  }
  return -1;
}

/** The parts of `r` that `b` holds as consecutive rows: (index range in r, first row in b). */
struct Part {
  int64_t i0 = 0, i1 = 0, row = 0;
};
std::vector<Part> held_parts(const BufferPlacement& b, int seq, const TokenRange& r) {
  std::vector<Part> out;
  if (r.size() == 0)
    return out;
  if (int64_t row = consecutive_rows(b, seq, r); row >= 0)
    return {{0, r.size(), row}};
  int64_t row0 = 0;
  for (const TokenSlice& s : b.tokens) {
    RowBlock blk;
    if (s.seq == seq && intersect_rows(r, 0, s.range, row0, blk) && blk.src_step == 1 && blk.dst_step == 1)
      out.push_back({blk.src_row, blk.src_row + blk.rows, blk.dst_row});
    row0 += s.range.size();
  }
  std::sort(out.begin(), out.end(), [](const Part& a, const Part& c) { return a.i0 < c.i0; });
  return out;
}

struct KvChoice {
  int k = -1, v = -1, k_plane = 0, v_plane = 0;
  bool operator==(const KvChoice&) const = default;
};

} // namespace

void plan_launches(const RankProgram& p, const Workload& w, const MaskGeometry& mask, RankExecPlan& rp) {
  const int per = w.heads / w.kv_heads;
  std::map<int, std::map<int, std::vector<bool>>> cover; // forward attention op -> written buffer -> rows its launches write
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::ATTENTION)
      continue;
    const std::string at = op_where(p.rank, op);
    std::vector<int> qs, ks, gathered;
    for (const auto& n : op.reads) {
      const int b = rp.buffer_index.at(n);
      const std::string f = tensor_family(rp.buffers[size_t(b)].tensor);
      if (f == "q")
        qs.push_back(b);
      else if (f == "k" || f == "v" || f == "kv")
        ks.push_back(b);
    }
    for (const auto& [gid, g] : rp.gathers)
      if (std::find(op.reads.begin(), op.reads.end(), rp.buffers[size_t(g.packed)].name) != op.reads.end())
        gathered.push_back(gid);
    auto& launches = rp.launches[op.id];
    if (!gathered.empty()) { // PIT: the launch reads the packed tiles of the gather before it
      if (gathered.size() != 1)
        throw UserError(at + ": reads the packed tiles of " + std::to_string(gathered.size()) + " gathers; a launch reads one");
      const GatherLayout& g = rp.gathers.at(gathered[0]);
      // columns: queries from the q buffer, K and V packed; rows: queries packed, K and V from the one kv buffer
      if (g.rows ? (!qs.empty() || ks.size() != 1 || tensor_family(rp.buffers[size_t(ks[0])].tensor) != "kv")
                 : (qs.size() != 1 || !ks.empty()))
        throw UserError(at + ": reads packed " + (g.rows ? "query rows and must read one K-then-V buffer and no q buffer"
                                                         : "K, V micro-tiles and must read one q buffer and no other K/V buffer"));
      for (size_t slot = 0; slot < g.slot_heads.size(); ++slot) {
        AttnLaunch l;
        l.q = g.rows ? -1 : qs[0];
        if (g.rows) {
          l.k = l.v = ks[0];
          l.v_plane = 1;
        }
        l.gather = gathered[0];
        l.slot = int(slot);
        l.head_begin = g.slot_heads[slot] < 0 ? op.head_begin : g.slot_heads[slot];
        l.head_end = g.slot_heads[slot] < 0 ? op.head_end : g.slot_heads[slot] + 1;
        launches.push_back(std::move(l));
      }
      if (g.rows) { // the executor places packed queries, partial outputs and gradients by the gather (rank_executor.cpp)
        const BufferPlacement& kv = rp.buffers[size_t(ks[0])];
        for (const auto& n : op.writes) // dK, dV are written in the key tiles' rows of the kv buffer
          if (const BufferPlacement& d = rp.buffer(n); tensor_family(d.tensor) == "dkv" && (d.tokens != kv.tokens || d.head_ids != kv.head_ids))
            throw UserError(at + ": its dK, dV buffer '" + d.name + "' must hold the rows and heads of its K, V buffer '" + kv.name + "'");
        continue;
      }
    } else {
      if (qs.size() != 1)
        throw UserError(at + ": reads " + std::to_string(qs.size()) + " q buffers; a kernel launch reads one (blocks from "
                        "several buffers must first be copied into one, as the IR's copy ops do)");
      // the k and v buffers holding each KV head
      auto choose = [&](int kvh) {
        KvChoice c;
        for (int b : ks) {
          const BufferPlacement& bp = rp.buffers[size_t(b)];
          if (bp.head_pos(kvh) < 0)
            continue;
          const std::string f = tensor_family(bp.tensor);
          if (f == "kv") {
            c.k = c.v = b;
            c.k_plane = 0;
            c.v_plane = 1;
          } else if (f == "k") {
            c.k = b;
          } else {
            c.v = b;
          }
        }
        if (c.k < 0 || c.v < 0)
          throw UserError(at + ": no K or V buffer it reads holds KV head " + std::to_string(kvh));
        return c;
      };
      const BufferPlacement& qb = rp.buffers[size_t(qs[0])];
      const std::vector<int> heads = op.head_list();
      for (size_t i = 0; i < heads.size(); ++i) {
        const int h = heads[i];
        if (qb.head_pos(h) < 0)
          throw UserError(at + ": its q buffer '" + qb.name + "' does not hold head " + std::to_string(h));
        const KvChoice c = choose(h / per);
        if (!launches.empty()) {
          AttnLaunch& l = launches.back();
          const int prev = l.head_end - 1, pk = prev / per, kk = h / per;
          const KvChoice pc{l.k, l.v, l.k_plane, l.v_plane};
          const BufferPlacement &kb = rp.buffers[size_t(c.k)], &vb = rp.buffers[size_t(c.v)];
          const bool kv_next = kk == pk || (kk == pk + 1 && kb.head_pos(kk) == kb.head_pos(pk) + 1 && vb.head_pos(kk) == vb.head_pos(pk) + 1);
          if (h == prev + 1 && qb.head_pos(h) == qb.head_pos(prev) + 1 && pc == c && kv_next) {
            l.head_end = h + 1;
            continue;
          }
        }
        AttnLaunch l;
        l.q = qs[0];
        l.k = c.k;
        l.v = c.v;
        l.k_plane = c.k_plane;
        l.v_plane = c.v_plane;
        l.head_begin = h;
        l.head_end = h + 1;
        launches.push_back(std::move(l));
      }
      // rectangles in buffer rows; keys a buffer does not hold must be invisible to the run's heads
      for (AttnLaunch& l : launches) {
        const BufferPlacement &kb = rp.buffers[size_t(l.k)], &vb = rp.buffers[size_t(l.v)];
        if (kb.tokens != vb.tokens)
          throw UserError(at + ": its K buffer '" + kb.name + "' and V buffer '" + vb.name + "' hold different tokens");
        for (const AttnSegment& seg : op.segments) {
          const std::vector<Part> qp = held_parts(qb, seg.seq, seg.q), kp = held_parts(kb, seg.seq, seg.k);
          int64_t q_held = 0;
          for (const Part& a : qp)
            q_held += a.i1 - a.i0;
          if (q_held != seg.q.size())
            throw UserError(at + ": queries [" + std::to_string(seg.q.begin) + ", " + std::to_string(seg.q.end) +
                            ") of sequence " + std::to_string(seg.seq) + " are not all in its q buffer '" + qb.name + "'");
          int64_t next = 0; // keys of seg.k not held must see no query of the segment
          auto unheld = [&](int64_t i0, int64_t i1) {
            if (i1 <= i0)
              return;
            const TokenRange miss = sub_range(seg.k, i0, i1);
            for (int h = l.head_begin; h < l.head_end; ++h)
              if (mask.cells(seg.seq, h, seg.q, miss) > 0)
                throw UserError(at + ": keys [" + std::to_string(miss.begin) + ", " + std::to_string(miss.end) +
                                ") of sequence " + std::to_string(seg.seq) + " are visible to head " + std::to_string(h) +
                                " but its K buffer '" + kb.name + "' does not hold them");
          };
          for (const Part& b : kp) {
            unheld(next, b.i0);
            next = b.i1;
            for (const Part& a : qp)
              l.segments.push_back({seg.seq, a.row, b.row, sub_range(seg.q, a.i0, a.i1), sub_range(seg.k, b.i0, b.i1)});
          }
          unheld(next, seg.k.size());
        }
      }
    }

    // the other buffers of each side: the run's heads side by side, rows at a constant offset from q's (k's)
    for (AttnLaunch& l : launches) {
      auto side_buffers = [&](const std::vector<std::string>& names) {
        for (const auto& n : names) {
          const int b = rp.buffer_index.at(n);
          const BufferPlacement& bp = rp.buffers[size_t(b)];
          const std::string f = tensor_family(bp.tensor);
          const bool qsd = q_side(f);
          if (b == l.q || b == l.k || b == l.v || (!qsd && !k_side(f)) || (!qsd && l.gather >= 0))
            continue; // the launch's own inputs, other tensors, or PIT's packed gradients
          if (!qsd && f != "dk" && f != "dv" && f != "dkv")
            continue; // other K/V buffers the op reads serve other launches
          const int h0 = qsd ? l.head_begin : l.head_begin / per, h1 = qsd ? l.head_end - 1 : (l.head_end - 1) / per;
          const int pos0 = bp.head_pos(h0);
          if (!qsd && pos0 < 0 && bp.head_pos(h1) < 0)
            continue; // the gradients of other KV heads (DSV's per-group buffers) belong to other launches
          if (pos0 < 0 || bp.head_pos(h1) != pos0 + (h1 - h0))
            throw UserError(at + ": buffer '" + bp.name + "' does not hold heads " + std::to_string(h0) + ".." +
                            std::to_string(h1) + " side by side");
          int64_t off = 0;
          bool first = true;
          for (const SegmentRows& sg : l.segments) {
            const int64_t row = consecutive_rows(bp, sg.seq, qsd ? sg.q : sg.k);
            const int64_t o = row - (qsd ? sg.q_row : sg.k_row);
            if (row < 0 || (!first && o != off))
              throw UserError(at + ": buffer '" + bp.name + "' does not hold the " + (qsd ? "query" : "key") +
                              " rows of its rectangles in the order of its " + (qsd ? "q" : "K") + " buffer");
            off = o;
            first = false;
          }
          l.row_offset[b] = off;
        }
      };
      side_buffers(op.reads);
      side_buffers(op.writes);
    }
    if (op.dir == Direction::BACKWARD) { // the kernels write (=) each KV head's dK, dV once, summed over its query heads
      std::vector<int> kv_seen;
      for (const AttnLaunch& l : launches)
        for (int kvh = l.head_begin / per; l.gather < 0 && kvh <= (l.head_end - 1) / per; ++kvh) {
          if (std::find(kv_seen.begin(), kv_seen.end(), kvh) != kv_seen.end())
            throw UserError(at + ": the query heads of KV head " + std::to_string(kvh) + " fall into two launches, whose "
                            "dK, dV would overwrite each other; place whole KV-head groups side by side");
          kv_seen.push_back(kvh);
        }
      continue;
    }
    // written rows some launch covers (a PIT launch covers every query tile of its gather, keys or not)
    for (const auto& n : op.writes) {
      const int b = rp.buffer_index.at(n);
      const BufferPlacement& bp = rp.buffers[size_t(b)];
      std::vector<bool> hit(size_t(bp.rows), false);
      for (const AttnLaunch& l : launches) {
        const int64_t off = b == l.q ? 0 : l.row_offset.count(b) ? l.row_offset.at(b) : 0;
        auto mark = [&](int64_t row, int64_t n_rows) {
          for (int64_t r = std::max<int64_t>(0, row + off); r < std::min<int64_t>(bp.rows, row + off + n_rows); ++r)
            hit[size_t(r)] = true;
        };
        if (l.gather >= 0)
          for (const auto& t : rp.gathers.at(l.gather).tiles.at(size_t(l.slot)))
            mark(t.fixed_row, t.fixed_n);
        else
          for (const SegmentRows& sg : l.segments)
            mark(sg.q_row, sg.q.size());
      }
      cover[op.id][b] = std::move(hit);
    }
  }
  // Rows no launch covers must read as "no keys" for the merge after them, but rows another forward attention op
  // writes before that reader are its (TE all-gather's two chunks into one o): per buffer, the forward attention ops
  // writing it with no reader between them form a group, and the group's first op prefills when they leave rows over.
  std::map<int, std::pair<int, std::vector<bool>>> group; // buffer -> (first op, rows covered so far)
  auto close = [&](int b) {
    auto it = group.find(b);
    if (it == group.end())
      return;
    if (std::find(it->second.second.begin(), it->second.second.end(), false) != it->second.second.end())
      rp.prefill[it->second.first].push_back(b);
    group.erase(it);
  };
  for (const Slot& sl : rp.slots)
    for (int id : sl.ops) {
      const Op& op = p.ops[size_t(id)];
      for (const auto& n : op.reads)
        close(rp.buffer_index.at(n));
      auto c = cover.find(id);
      if (c == cover.end()) {
        for (const auto& n : op.writes) // another writer ends the group too
          close(rp.buffer_index.at(n));
        continue;
      }
      for (auto& [b, hit] : c->second) {
        auto [it, fresh] = group.try_emplace(b, id, hit);
        if (!fresh)
          for (size_t r = 0; r < hit.size(); ++r)
            it->second.second[r] = it->second.second[r] || hit[r];
      }
    }
  for (auto it = group.begin(); it != group.end(); it = group.begin())
    close(it->first);
}

} // namespace cpsim::backend
