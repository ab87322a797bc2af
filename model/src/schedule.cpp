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
  case ComputeKind::COPY: return "copy";
  }
  return "?";
}

namespace {
/** The explicit list where there is one, else the range [begin, end). */
std::vector<int> listed_heads(const std::vector<int>& ids, int begin, int end) {
  if (!ids.empty())
    return ids;
  std::vector<int> h;
  for (int x = begin; x < end; ++x)
    h.push_back(x);
  return h;
}
} // namespace

std::vector<int> Op::head_list() const { return listed_heads(head_ids, head_begin, head_end); }
std::vector<int> Buffer::head_list() const { return listed_heads(head_ids, head_begin, head_end); }

int64_t Buffer::rows() const {
  int64_t n = 0;
  for (const TokenSlice& t : tokens)
    n += t.range.size();
  return n;
}

int tensor_planes(const std::string& tensor) { return tensor == "kv" || tensor == "dkv" || tensor == "dkv_acc" ? 2 : 1; }

int64_t buffer_unit_bytes(const Buffer& b) {
  const int64_t n = b.rows() * b.heads() * tensor_planes(b.tensor);
  return n > 0 && b.bytes % n == 0 ? b.bytes / n : -1;
}

int64_t region_bytes(const Buffer& b, const BufferRegion& r) {
  const int64_t unit = buffer_unit_bytes(b);
  if (unit < 0)
    return -1;
  int64_t rows = 0;
  for (const TokenSlice& t : r.tokens)
    rows += t.range.size();
  if (r.tokens.empty())
    rows = b.rows();
  const int64_t heads = r.heads.empty() ? b.heads() : int64_t(r.heads.size());
  const int64_t planes = (r.plane_end < 0 ? tensor_planes(b.tensor) : r.plane_end) - r.plane_begin;
  return rows * heads * planes * unit;
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

const std::vector<std::string> kDtypes = {"bf16", "fp32", "fp64", "int32"};

void check_buffer(int r, const Buffer& b) {
  if (!b.dtype.empty() && std::find(kDtypes.begin(), kDtypes.end(), b.dtype) == kDtypes.end())
    bad(r, nullptr, "buffer '" + b.name + "' has dtype '" + b.dtype + "' (bf16, fp32, fp64 or int32)");
  for (size_t i = 0; i < b.head_ids.size(); ++i)
    if (b.head_ids[i] < b.head_begin || b.head_ids[i] >= b.head_end || (i > 0 && b.head_ids[i] <= b.head_ids[i - 1]))
      bad(r, nullptr, "buffer '" + b.name + "': 'head_ids' must be increasing and inside its head range");
}

/** A region's slice must lie inside one slice of its buffer (same sequence, its positions a sub-progression). */
bool slice_held(const Buffer& b, const TokenSlice& t) {
  if (t.range.size() == 0)
    return true;
  for (const TokenSlice& s : b.tokens) {
    const TokenRange& a = s.range;
    if (s.seq != t.seq || t.range.begin < a.begin || t.range.last() > a.last() || (t.range.begin - a.begin) % a.stride != 0)
      continue;
    if (t.range.size() == 1 || t.range.stride % a.stride == 0)
      return true;
  }
  return false;
}

/** Regions of a SEND (reads) or RECV (writes): named buffers, held tokens and heads, planes, and their bytes. */
void check_regions(int r, const RankProgram& p, const Op& op) {
  if (op.regions.empty())
    return;
  const std::vector<std::string>& names = op.kind == OpKind::SEND ? op.reads : op.writes;
  int64_t total = 0;
  for (const BufferRegion& g : op.regions) {
    if (std::find(names.begin(), names.end(), g.buffer) == names.end())
      bad(r, &op, "region of buffer '" + g.buffer + "', which the op does not " + (op.kind == OpKind::SEND ? "read" : "write"));
    const Buffer& b = *std::find_if(p.buffers.begin(), p.buffers.end(), [&](const Buffer& x) { return x.name == g.buffer; });
    for (const TokenSlice& t : g.tokens)
      if (!slice_held(b, t))
        bad(r, &op, "region of '" + b.name + "' names tokens [" + std::to_string(t.range.begin) + ", " +
                        std::to_string(t.range.end) + ") of sequence " + std::to_string(t.seq) + ", which it does not hold");
    const std::vector<int> held = b.head_list();
    for (size_t i = 0; i < g.heads.size(); ++i)
      if (std::find(held.begin(), held.end(), g.heads[i]) == held.end() ||
          std::find(g.heads.begin(), g.heads.begin() + std::ptrdiff_t(i), g.heads[i]) != g.heads.begin() + std::ptrdiff_t(i))
        bad(r, &op, "region of '" + b.name + "' names head " + std::to_string(g.heads[i]) + " twice or one it does not hold");
    const int planes = tensor_planes(b.tensor), end = g.plane_end < 0 ? planes : g.plane_end;
    if (g.plane_begin < 0 || end > planes || g.plane_begin >= end)
      bad(r, &op, "region of '" + b.name + "' names planes [" + std::to_string(g.plane_begin) + ", " + std::to_string(end) +
                      ") of a buffer with " + std::to_string(planes));
    const int64_t n = region_bytes(b, g);
    if (n < 0)
      bad(r, &op, "region of '" + b.name + "': its " + std::to_string(b.bytes) + " bytes do not divide into rows x heads");
    total += n;
  }
  for (const std::string& n : names)
    if (std::none_of(op.regions.begin(), op.regions.end(), [&](const BufferRegion& g) { return g.buffer == n; }))
      bad(r, &op, "buffer '" + n + "' has no region in a message given by regions");
  if (total != op.bytes)
    bad(r, &op, "its regions hold " + std::to_string(total) + " bytes, not the op's " + std::to_string(op.bytes));
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
      check_buffer(r, b);
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
        if (op.granularity < 0 || std::any_of(op.keep.begin(), op.keep.end(), [](int64_t k) { return k < 0; }))
          bad(r, &op, "compute op needs granularity >= 0 and keep >= 0");
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
        check_regions(r, p, op);
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
