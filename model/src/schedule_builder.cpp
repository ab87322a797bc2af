// ScheduleBuilder: bookkeeping shared by generators, so each generator reads like its algorithm.
#include "cpsim/model/schedule_builder.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

ScheduleBuilder::ScheduleBuilder(const Scenario& sc, const MaskGeometry& mask, std::string scheme, int world)
    : sc_(sc), mask_(mask), next_group_(static_cast<size_t>(world), 0) {
  s_.scheme = std::move(scheme);
  s_.pass = sc.pass;
  s_.world = world;
  s_.tile_m = sc.tile_m;
  s_.tile_n = sc.tile_n;
  s_.replicas = sc.parallel.dp;
  s_.replica_stride = world;
  for (int r = 0; r < world; ++r) {
    s_.placement.push_back(r);
    RankProgram p;
    p.rank = r;
    s_.ranks.push_back(std::move(p));
  }
}

int ScheduleBuilder::add_stream(const std::string& name, StreamKind kind) {
  s_.streams.push_back({name, kind});
  return static_cast<int>(s_.streams.size()) - 1;
}

Buffer& ScheduleBuilder::add_buffer(int rank, Buffer b) {
  auto& bufs = s_.ranks[static_cast<size_t>(rank)].buffers;
  bufs.push_back(std::move(b));
  return bufs.back();
}

Buffer& ScheduleBuilder::find_buffer(int rank, const std::string& buffer, const char* caller) {
  for (auto& b : s_.ranks[static_cast<size_t>(rank)].buffers)
    if (b.name == buffer)
      return b;
  assert_fail("buffer declared", __FILE__, __LINE__, std::string(caller) + " on unknown buffer " + buffer);
}

const Buffer& ScheduleBuilder::buffer(int rank, const std::string& name) const {
  return const_cast<ScheduleBuilder*>(this)->find_buffer(rank, name, "buffer");
}

void ScheduleBuilder::set_free(int rank, const std::string& buffer, int op) {
  Buffer& b = find_buffer(rank, buffer, "set_free");
  b.free_op = std::max(b.free_op, op);
}

void ScheduleBuilder::set_alloc(int rank, const std::string& buffer, int op) {
  find_buffer(rank, buffer, "set_alloc").alloc_op = op;
}

Op& ScheduleBuilder::push(int rank, Op op) {
  auto& ops = s_.ranks[static_cast<size_t>(rank)].ops;
  op.id = static_cast<int>(ops.size());
  // -1 stands for "no such op" (a skipped attention, a collective of one rank): drop it
  std::erase_if(op.deps, [](int d) { return d < 0; });
  for (int d : op.deps)
    CPSIM_ASSERT(d < op.id, "generator emitted a dependency on a later op");
  ops.push_back(std::move(op));
  return ops.back();
}

int64_t ScheduleBuilder::cells_of(const std::vector<AttnSegment>& segs) const {
  int64_t c = 0;
  for (const auto& s : segs)
    c += mask_.cells(s.seq, s.q, s.k);
  return c;
}

int ScheduleBuilder::attention(int rank, int stream, std::vector<int> deps, Direction dir, int head_begin,
                               int head_end, const std::vector<AttnSegment>& segs, std::string label,
                               std::vector<std::string> reads, std::vector<std::string> writes) {
  Op op;
  op.stream = stream;
  op.deps = std::move(deps);
  op.dir = dir;
  op.head_begin = head_begin;
  op.head_end = head_end;
  op.label = std::move(label);
  op.reads = std::move(reads);
  op.writes = std::move(writes);
  return emit_attention(rank, std::move(op), segs);
}

int ScheduleBuilder::attention_on_heads(int rank, int stream, std::vector<int> deps, Direction dir,
                                        std::vector<int> heads, const std::vector<AttnSegment>& segs,
                                        std::string label, std::vector<std::string> reads,
                                        std::vector<std::string> writes) {
  CPSIM_ASSERT(!heads.empty(), "attention on an empty head list");
  std::sort(heads.begin(), heads.end());
  Op op;
  op.stream = stream;
  op.deps = std::move(deps);
  op.dir = dir;
  op.head_begin = heads.front();
  op.head_end = heads.back() + 1;
  if (op.head_end - op.head_begin != static_cast<int>(heads.size()))
    op.head_ids = std::move(heads);
  op.label = std::move(label);
  op.reads = std::move(reads);
  op.writes = std::move(writes);
  return emit_attention(rank, std::move(op), segs);
}

int ScheduleBuilder::emit_attention(int rank, Op op, const std::vector<AttnSegment>& segs) {
  op.kind = OpKind::ATTENTION;
  // Per-head masks count every head; head-uniform ones count one head (the dense paths).
  op.head_summed = mask_.per_head();
  const std::vector<int> heads = op.head_summed ? op.head_list() : std::vector<int>{};
  for (const auto& s : segs) {
    int64_t c = 0;
    TileCount t;
    if (!op.head_summed) {
      c = mask_.cells(s.seq, s.q, s.k);
      if (c == 0)
        continue;
      t = mask_.tiles(s.seq, s.q, s.k, s_.tile_m, s_.tile_n);
    } else {
      for (int h : heads) {
        int64_t ch = mask_.cells(s.seq, h, s.q, s.k);
        if (ch == 0)
          continue;
        c += ch;
        TileCount th = mask_.tiles(s.seq, h, s.q, s.k, s_.tile_m, s_.tile_n);
        t.full += th.full;
        t.partial += th.partial;
      }
      if (c == 0)
        continue;
    }
    op.cells += c;
    op.tiles.full += t.full;
    op.tiles.partial += t.partial;
    op.segments.push_back(s);
  }
  if (op.segments.empty())
    return -1;
  return push(rank, std::move(op)).id;
}

GatheredTiles ScheduleBuilder::gather_tiles(int rank, int op_id, int64_t granularity, GatherAxis axis) {
  Op& op = s_.ranks[static_cast<size_t>(rank)].ops.at(static_cast<size_t>(op_id));
  CPSIM_ASSERT(op.kind == OpKind::ATTENTION, "gather_tiles on a non-attention op");
  GatheredTiles g;
  int64_t cells = 0;
  // head-uniform masks: count one head and scale, the heads' gathers being identical
  const std::vector<int> heads = mask_.per_head() ? op.head_list() : std::vector<int>{op.head_list().front()};
  for (int h : heads)
    for (const auto& s : op.segments) {
      g += gathered_tiles(mask_, s.seq, h, s.q, s.k, s_.tile_m, s_.tile_n, granularity, axis);
      cells += mask_.cells(s.seq, h, s.q, s.k);
    }
  if (!mask_.per_head()) {
    const int64_t n = op.heads();
    g.tiles = {g.tiles.full * n, g.tiles.partial * n};
    g.gathered *= n;
    g.micro_tiles *= n;
    g.candidates *= n;
    cells *= n;
  }
  op.cells = cells;
  op.tiles = g.tiles;
  op.head_summed = true;
  return g;
}

int ScheduleBuilder::compute(int rank, int stream, std::vector<int> deps, ComputeKind kind, int64_t flops,
                             int64_t bytes, std::string label, std::vector<std::string> reads,
                             std::vector<std::string> writes) {
  Op op;
  op.kind = OpKind::COMPUTE;
  op.stream = stream;
  op.deps = std::move(deps);
  op.compute = kind;
  op.flops = flops;
  op.bytes = bytes;
  op.label = std::move(label);
  op.reads = std::move(reads);
  op.writes = std::move(writes);
  return push(rank, std::move(op)).id;
}

void ScheduleBuilder::set_compute_cost(int rank, int op_id, int64_t flops, int64_t bytes) {
  Op& op = s_.ranks[static_cast<size_t>(rank)].ops.at(static_cast<size_t>(op_id));
  CPSIM_ASSERT(op.kind == OpKind::COMPUTE, "set_compute_cost on a non-compute op");
  op.flops = flops;
  op.bytes = bytes;
}

void ScheduleBuilder::set_gather(int rank, int op_id, int64_t granularity, bool rows) {
  Op& op = s_.ranks[static_cast<size_t>(rank)].ops.at(static_cast<size_t>(op_id));
  CPSIM_ASSERT(op.kind == OpKind::COMPUTE && (op.compute == ComputeKind::GATHER || op.compute == ComputeKind::SCATTER),
               "set_gather on an op that is neither gather nor scatter");
  op.granularity = granularity;
  op.gather_rows = rows;
}

void ScheduleBuilder::set_predictor(int rank, int op_id, int64_t query_group, std::vector<int64_t> keep) {
  Op& op = s_.ranks[static_cast<size_t>(rank)].ops.at(static_cast<size_t>(op_id));
  CPSIM_ASSERT(op.kind == OpKind::COMPUTE && (op.compute == ComputeKind::LOWRANK_QK || op.compute == ComputeKind::TOPK),
               "set_predictor on an op that is not a predictor op");
  op.granularity = query_group;
  op.keep = std::move(keep);
}

void ScheduleBuilder::set_regions(int rank, int op_id, std::vector<BufferRegion> regions) {
  Op& op = s_.ranks[static_cast<size_t>(rank)].ops.at(static_cast<size_t>(op_id));
  CPSIM_ASSERT(op.kind == OpKind::SEND || op.kind == OpKind::RECV, "set_regions on an op that is neither send nor receive");
  if (regions.empty())
    return; // an empty message keeps the buffer it names
  std::vector<std::string> names;
  for (const BufferRegion& g : regions)
    if (std::find(names.begin(), names.end(), g.buffer) == names.end())
      names.push_back(g.buffer);
  (op.kind == OpKind::SEND ? op.reads : op.writes) = std::move(names);
  op.regions = std::move(regions);
}

void ScheduleBuilder::set_plane(int rank, int op_id, int plane) {
  if (op_id < 0)
    return;
  Op& op = s_.ranks[static_cast<size_t>(rank)].ops.at(static_cast<size_t>(op_id));
  CPSIM_ASSERT(op.kind == OpKind::COLLECTIVE && (plane == 0 || plane == 1), "set_plane needs a collective and plane 0 or 1");
  op.plane = plane;
}

void ScheduleBuilder::set_buffer_bytes(int rank, const std::string& buffer, int64_t bytes) {
  find_buffer(rank, buffer, "set_buffer_bytes").bytes = bytes;
}

int ScheduleBuilder::merge(int rank, int stream, std::vector<int> deps, Direction dir, int head_begin, int head_end,
                           int64_t rows, int inputs, int64_t bytes, std::string label, std::vector<std::string> reads,
                           std::vector<std::string> writes) {
  Op op;
  op.kind = OpKind::MERGE;
  op.stream = stream;
  op.deps = std::move(deps);
  op.dir = dir;
  op.head_begin = head_begin;
  op.head_end = head_end;
  op.rows = rows;
  op.inputs = inputs;
  op.bytes = bytes;
  op.label = std::move(label);
  op.reads = std::move(reads);
  op.writes = std::move(writes);
  return push(rank, std::move(op)).id;
}

int ScheduleBuilder::send(int rank, int stream, std::vector<int> deps, int peer, int64_t bytes, int tag, int group,
                          std::string label, std::string buffer) {
  Op op;
  op.kind = OpKind::SEND;
  op.stream = stream;
  op.deps = std::move(deps);
  op.peer = peer;
  op.bytes = bytes;
  op.tag = tag;
  op.group = group;
  op.label = std::move(label);
  op.reads = {std::move(buffer)};
  return push(rank, std::move(op)).id;
}

int ScheduleBuilder::recv(int rank, int stream, std::vector<int> deps, int peer, int64_t bytes, int tag, int group,
                          std::string label, std::string buffer) {
  Op op;
  op.kind = OpKind::RECV;
  op.stream = stream;
  op.deps = std::move(deps);
  op.peer = peer;
  op.bytes = bytes;
  op.tag = tag;
  op.group = group;
  op.label = std::move(label);
  op.writes = {std::move(buffer)};
  return push(rank, std::move(op)).id;
}

int ScheduleBuilder::collective(int rank, int stream, std::vector<int> deps, CollectiveKind kind,
                                std::vector<int> group_ranks, int64_t bytes, int tag, std::string label,
                                std::vector<std::string> reads, std::vector<std::string> writes) {
  if (group_ranks.size() < 2)
    return -1; // a collective over one rank moves nothing
  Op op;
  op.kind = OpKind::COLLECTIVE;
  op.stream = stream;
  op.deps = std::move(deps);
  op.coll = kind;
  op.coll_group = std::move(group_ranks);
  op.bytes = bytes;
  op.tag = tag;
  op.label = std::move(label);
  op.reads = std::move(reads);
  op.writes = std::move(writes);
  return push(rank, std::move(op)).id;
}

Schedule ScheduleBuilder::finish() {
  validate_schedule(s_);
  return std::move(s_);
}

} // namespace cpsim
