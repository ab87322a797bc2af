// Names of IR enums and the structural validation every executor relies on.
#include <algorithm>
#include "cpsim/model/schedule.hpp"

#include "cpsim/model/errors.hpp"

#include <map>
#include <set>
#include <tuple>

namespace cpsim {

std::string to_string(OpKind k) {
  switch (k) {
  case OpKind::ATTENTION: return "attention";
  case OpKind::MERGE: return "merge";
  case OpKind::SEND: return "send";
  case OpKind::RECV: return "recv";
  case OpKind::COLLECTIVE: return "collective";
  case OpKind::COMPUTE: return "compute";
  }
  return "?";
}
std::string to_string(ComputeKind k) {
  switch (k) {
  case ComputeKind::GATHER: return "gather";
  case ComputeKind::SCATTER: return "scatter";
  case ComputeKind::LOWRANK_QK: return "lowrank_qk";
  case ComputeKind::TOPK: return "topk";
  }
  return "?";
}

std::vector<int> Op::head_list() const {
  if (!head_ids.empty())
    return head_ids;
  std::vector<int> h;
  for (int x = head_begin; x < head_end; ++x)
    h.push_back(x);
  return h;
}
std::string to_string(Direction d) { return d == Direction::FORWARD ? "fwd" : "bwd"; }
std::string to_string(CollectiveKind k) {
  switch (k) {
  case CollectiveKind::ALL_GATHER: return "all_gather";
  case CollectiveKind::REDUCE_SCATTER: return "reduce_scatter";
  case CollectiveKind::ALL_TO_ALL: return "all_to_all";
  case CollectiveKind::ALL_REDUCE: return "all_reduce";
  }
  return "?";
}
std::string to_string(PassKind p) { return p == PassKind::FWD ? "fwd" : "fwd_bwd"; }

namespace {
[[noreturn]] void bad(int rank, const Op* op, const std::string& why) {
  std::string where = "plan: rank " + std::to_string(rank);
  if (op)
    where += ", op " + std::to_string(op->id) + " (" + to_string(op->kind) + (op->label.empty() ? "" : " '" + op->label + "'") + ")";
  throw UserError(where + ": " + why);
}
} // namespace

void validate_schedule(const Schedule& s) {
  if (s.world <= 0 || static_cast<int>(s.ranks.size()) != s.world)
    throw UserError("plan: 'world' = " + std::to_string(s.world) + " but " + std::to_string(s.ranks.size()) +
                    " rank programs are given");
  if (s.streams.empty())
    throw UserError("plan: no streams declared");
  if (static_cast<int>(s.placement.size()) != s.world)
    throw UserError("plan: 'placement' must map each of the " + std::to_string(s.world) + " ranks to a GPU");
  std::set<int> gpus;
  for (int k = 0; k < s.replicas; ++k)
    for (int g : s.placement)
      if (!gpus.insert(g + k * s.replica_stride).second)
        throw UserError("plan: 'placement' (with replicas) puts two ranks on GPU " + std::to_string(g + k * s.replica_stride));

  // (src, dst, tag) -> bytes, for pairing sends with receives
  std::map<std::tuple<int, int, int>, int64_t> sends, recvs;
  // tag -> (kind, group, per-rank bytes, count)
  struct CollSeen { CollectiveKind kind; std::vector<int> group; int64_t bytes; int count; };
  std::map<int, CollSeen> colls;

  for (int r = 0; r < s.world; ++r) {
    const RankProgram& p = s.ranks[static_cast<size_t>(r)];
    if (p.rank != r)
      bad(r, nullptr, "rank programs must be listed in rank order");
    std::set<std::string> names;
    for (const Buffer& b : p.buffers) {
      if (!names.insert(b.name).second)
        bad(r, nullptr, "buffer '" + b.name + "' declared twice");
      if (b.bytes < 0)
        bad(r, nullptr, "buffer '" + b.name + "' has negative size");
      int n = static_cast<int>(p.ops.size());
      if (b.alloc_op < -1 || b.alloc_op >= n || b.free_op < -1 || b.free_op >= n ||
          (b.alloc_op >= 0 && b.free_op >= 0 && b.free_op < b.alloc_op))
        bad(r, nullptr, "buffer '" + b.name + "' has an invalid lifetime");
      for (const TokenSlice& t : b.tokens)
        if (t.range.stride < 1 || t.range.begin < 0 || t.range.end < t.range.begin)
          bad(r, nullptr, "buffer '" + b.name + "' holds a token range with begin < 0, end < begin or stride < 1");
    }
    for (size_t i = 0; i < p.ops.size(); ++i) {
      const Op& op = p.ops[i];
      if (op.id != static_cast<int>(i))
        bad(r, &op, "op ids must equal their position in the list");
      if (op.stream < 0 || op.stream >= static_cast<int>(s.streams.size()))
        bad(r, &op, "stream index out of range");
      for (int d : op.deps)
        if (d < 0 || d >= op.id)
          bad(r, &op, "dependency " + std::to_string(d) + " must name an earlier op of the same rank");
      for (const auto* list : {&op.reads, &op.writes})
        for (const std::string& b : *list) {
          if (!names.count(b))
            bad(r, &op, "uses undeclared buffer '" + b + "'");
          // the memory model and the backend's arena reuse both take [alloc_op, free_op] as the buffer's life
          const Buffer& buf = *std::find_if(p.buffers.begin(), p.buffers.end(), [&](const Buffer& x) { return x.name == b; });
          if ((buf.alloc_op >= 0 && op.id < buf.alloc_op) || (buf.free_op >= 0 && op.id > buf.free_op))
            bad(r, &op, "uses buffer '" + b + "' outside its lifetime (ops " + std::to_string(buf.alloc_op) + ".." +
                            std::to_string(buf.free_op) + ")");
        }
      switch (op.kind) {
      case OpKind::ATTENTION:
        if (op.head_begin < 0 || op.head_end <= op.head_begin)
          bad(r, &op, "empty or negative head range");
        if (op.segments.empty())
          bad(r, &op, "attention op without segments");
        for (const AttnSegment& g : op.segments)
          for (const TokenRange* t : {&g.q, &g.k})
            if (t->stride < 1 || t->begin < 0 || t->end < t->begin)
              bad(r, &op, "segment token range needs 0 <= begin <= end and stride >= 1");
        if (s.streams[size_t(op.stream)].kind != StreamKind::COMPUTE)
          bad(r, &op, "attention must run on a compute stream");
        for (int h : op.head_ids)
          if (h < op.head_begin || h >= op.head_end)
            bad(r, &op, "head " + std::to_string(h) + " of 'head_ids' lies outside the op's head range");
        break;
      case OpKind::COMPUTE:
        if (op.flops < 0 || op.bytes < 0)
          bad(r, &op, "compute op needs flops >= 0 and bytes >= 0");
        if (s.streams[size_t(op.stream)].kind != StreamKind::COMPUTE)
          bad(r, &op, "compute op must run on a compute stream");
        break;
      case OpKind::MERGE:
        if (op.rows < 0 || op.inputs < 1 || op.head_end <= op.head_begin)
          bad(r, &op, "merge needs rows >= 0, inputs >= 1 and a head range");
        break;
      case OpKind::SEND:
      case OpKind::RECV: {
        if (op.peer < 0 || op.peer >= s.world || op.peer == r)
          bad(r, &op, "peer " + std::to_string(op.peer) + " is not another rank");
        if (op.bytes < 0)
          bad(r, &op, "negative bytes");
        auto key = op.kind == OpKind::SEND ? std::make_tuple(r, op.peer, op.tag) : std::make_tuple(op.peer, r, op.tag);
        auto& m = op.kind == OpKind::SEND ? sends : recvs;
        if (!m.emplace(key, op.bytes).second)
          bad(r, &op, "duplicate tag " + std::to_string(op.tag) + " for this peer");
        break;
      }
      case OpKind::COLLECTIVE: {
        if (op.coll_group.size() < 2)
          bad(r, &op, "collective group needs at least two ranks");
        bool member = false;
        for (int g : op.coll_group) {
          if (g < 0 || g >= s.world)
            bad(r, &op, "collective group names rank " + std::to_string(g));
          member |= g == r;
        }
        if (!member)
          bad(r, &op, "rank is not a member of its collective's group");
        if (op.plane < -1 || op.plane > 1)
          bad(r, &op, "'plane' must be 0 (K), 1 (V) or absent (both)");
        auto it = colls.find(op.tag);
        if (it == colls.end()) {
          colls[op.tag] = {op.coll, op.coll_group, op.bytes, 1};
        } else {
          if (it->second.kind != op.coll || it->second.group != op.coll_group)
            bad(r, &op, "collective tag " + std::to_string(op.tag) + " disagrees with another rank on kind or group");
          it->second.count++;
        }
        break;
      }
      }
    }
  }
  for (const auto& [key, bytes] : sends) {
    auto it = recvs.find(key);
    if (it == recvs.end())
      throw UserError("plan: send from rank " + std::to_string(std::get<0>(key)) + " to rank " +
                      std::to_string(std::get<1>(key)) + " (tag " + std::to_string(std::get<2>(key)) +
                      ") has no matching receive");
    if (it->second != bytes)
      throw UserError("plan: send/receive between ranks " + std::to_string(std::get<0>(key)) + " and " +
                      std::to_string(std::get<1>(key)) + " (tag " + std::to_string(std::get<2>(key)) +
                      ") disagree on bytes");
  }
  for (const auto& [key, bytes] : recvs)
    if (!sends.count(key))
      throw UserError("plan: receive on rank " + std::to_string(std::get<1>(key)) + " from rank " +
                      std::to_string(std::get<0>(key)) + " (tag " + std::to_string(std::get<2>(key)) +
                      ") has no matching send");
  for (const auto& [tag, c] : colls)
    if (c.count != static_cast<int>(c.group.size()))
      throw UserError("plan: collective tag " + std::to_string(tag) + " is posted by " + std::to_string(c.count) +
                      " of its " + std::to_string(c.group.size()) + " group members");
}

} // namespace cpsim
