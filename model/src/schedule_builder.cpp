// ScheduleBuilder: bookkeeping shared by generators, so each generator reads like its algorithm.
#include "cpsim/model/schedule_builder.hpp"

#include "cpsim/model/errors.hpp"

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

void ScheduleBuilder::set_free(int rank, const std::string& buffer, int op) {
  for (auto& b : s_.ranks[static_cast<size_t>(rank)].buffers)
    if (b.name == buffer) {
      b.free_op = std::max(b.free_op, op);
      return;
    }
  CPSIM_ASSERT(false, "set_free on unknown buffer " + buffer);
}

void ScheduleBuilder::set_alloc(int rank, const std::string& buffer, int op) {
  for (auto& b : s_.ranks[static_cast<size_t>(rank)].buffers)
    if (b.name == buffer) {
      b.alloc_op = op;
      return;
    }
  CPSIM_ASSERT(false, "set_alloc on unknown buffer " + buffer);
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
  op.kind = OpKind::ATTENTION;
  op.stream = stream;
  op.deps = std::move(deps);
  op.dir = dir;
  op.head_begin = head_begin;
  op.head_end = head_end;
  op.label = std::move(label);
  op.reads = std::move(reads);
  op.writes = std::move(writes);
  for (const auto& s : segs) {
    int64_t c = mask_.cells(s.seq, s.q, s.k);
    if (c == 0)
      continue;
    TileCount t = mask_.tiles(s.seq, s.q, s.k, s_.tile_m, s_.tile_n);
    op.cells += c;
    op.tiles.full += t.full;
    op.tiles.partial += t.partial;
    op.segments.push_back(s);
  }
  if (op.segments.empty())
    return -1;
  return push(rank, std::move(op)).id;
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
