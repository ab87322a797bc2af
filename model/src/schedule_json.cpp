// Schedule IR <-> JSON. Kind-specific fields are written only for their kind, to keep plans small.
#include "cpsim/model/schedule_json.hpp"

namespace cpsim {

namespace {

Json range_json(TokenRange r) {
  if (r.stride != 1)
    return Json::array({r.begin, r.end, r.stride});
  return Json::array({r.begin, r.end});
}

/** A token range: [begin, end] or, strided, [begin, end, stride]. */
TokenRange token_range_from(JsonObjectReader& r, const std::string& key) {
  const Json& v = r.raw(key);
  const char* shape = "must be [begin, end] or [begin, end, stride] with 0 <= begin <= end and stride >= 1";
  if (!v.is_array() || v.size() < 2 || v.size() > 3)
    r.fail(key, shape);
  for (const Json& e : v)
    if (!e.is_number_integer())
      r.fail(key, shape);
  TokenRange t{v[0].get<int64_t>(), v[1].get<int64_t>(), v.size() == 3 ? v[2].get<int64_t>() : 1};
  if (t.begin < 0 || t.end < t.begin || t.stride < 1)
    r.fail(key, shape);
  return t;
}

TokenRange range_from(JsonObjectReader& r, const std::string& key) {
  const Json& v = r.raw(key);
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer() ||
      v[0].get<int64_t>() < 0 || v[1].get<int64_t>() < v[0].get<int64_t>())
    r.fail(key, "must be [begin, end] with 0 <= begin <= end");
  return {v[0].get<int64_t>(), v[1].get<int64_t>()};
}

std::vector<int> int_list(JsonObjectReader& r, const std::string& key) {
  std::vector<int> out;
  if (!r.has(key))
    return out;
  const Json& v = r.raw(key);
  if (!v.is_array())
    r.fail(key, "must be an array of integers");
  for (const Json& e : v) {
    if (!e.is_number_integer())
      r.fail(key, "must be an array of integers");
    out.push_back(e.get<int>());
  }
  return out;
}

std::vector<std::string> string_list(JsonObjectReader& r, const std::string& key) {
  if (!r.has(key))
    return {};
  return r.get_string_array(key);
}

template <typename E>
E enum_from(JsonObjectReader& r, const std::string& key, std::initializer_list<E> values) {
  std::vector<std::string> names;
  for (E v : values)
    names.push_back(to_string(v));
  std::string s = r.get_enum(key, names);
  for (E v : values)
    if (to_string(v) == s)
      return v;
  r.fail(key, "unknown value");
}

std::string to_string(StreamKind k) { return k == StreamKind::COMPUTE ? "compute" : "comm"; }

Json slices_json(const std::vector<TokenSlice>& v) {
  Json toks = Json::array();
  for (const auto& t : v) {
    Json e = Json::array({t.seq, t.range.begin, t.range.end});
    if (t.range.stride != 1)
      e.push_back(t.range.stride);
    toks.push_back(e);
  }
  return toks;
}

std::vector<TokenSlice> slices_from(JsonObjectReader& r, const std::string& key) {
  std::vector<TokenSlice> out;
  const Json& toks = r.raw(key);
  const char* shape = "must be an array of [seq, begin, end] or [seq, begin, end, stride] (stride >= 1)";
  if (!toks.is_array())
    r.fail(key, shape);
  for (const Json& t : toks) {
    if (!t.is_array() || t.size() < 3 || t.size() > 4)
      r.fail(key, shape);
    for (const Json& e : t)
      if (!e.is_number_integer())
        r.fail(key, shape);
    TokenSlice ts{t[0].get<int>(), {t[1].get<int64_t>(), t[2].get<int64_t>(), t.size() == 4 ? t[3].get<int64_t>() : 1}};
    if (ts.range.stride < 1)
      r.fail(key, shape);
    out.push_back(ts);
  }
  return out;
}

Json region_json(const BufferRegion& g) {
  Json j{{"buffer", g.buffer}};
  if (!g.tokens.empty())
    j["tokens"] = slices_json(g.tokens);
  if (!g.heads.empty())
    j["heads"] = g.heads;
  if (g.plane_begin != 0 || g.plane_end >= 0)
    j["planes"] = {g.plane_begin, g.plane_end};
  return j;
}

BufferRegion region_from(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  BufferRegion g;
  g.buffer = r.get_string("buffer");
  if (r.has("tokens"))
    g.tokens = slices_from(r, "tokens");
  g.heads = int_list(r, "heads");
  if (r.has("planes")) {
    const Json& v = r.raw("planes");
    if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer())
      r.fail("planes", "must be [first, end] (end -1: through the last plane)");
    g.plane_begin = v[0].get<int>();
    g.plane_end = v[1].get<int>();
  }
  r.finish();
  return g;
}

Json op_to_json(const Op& op) {
  Json j{{"id", op.id}, {"kind", to_string(op.kind)}, {"stream", op.stream}, {"deps", op.deps}};
  if (op.group >= 0)
    j["group"] = op.group;
  if (!op.label.empty())
    j["label"] = op.label;
  if (!op.reads.empty())
    j["reads"] = op.reads;
  if (!op.writes.empty())
    j["writes"] = op.writes;
  switch (op.kind) {
  case OpKind::ATTENTION: {
    Json segs = Json::array();
    for (const auto& s : op.segments)
      segs.push_back({{"seq", s.seq}, {"q", range_json(s.q)}, {"k", range_json(s.k)}});
    j.update({{"dir", to_string(op.dir)}, {"heads", {op.head_begin, op.head_end}}, {"segments", segs},
              {"cells", op.cells}, {"full_tiles", op.tiles.full}, {"partial_tiles", op.tiles.partial}});
    if (op.head_summed) // per-head masks: cells and tiles are sums over the heads
      j["head_summed"] = true;
    if (!op.head_ids.empty())
      j["head_ids"] = op.head_ids;
    break;
  }
  case OpKind::COMPUTE:
    j.update({{"compute", to_string(op.compute)}, {"flops", op.flops}, {"bytes", op.bytes}});
    if (op.granularity > 0)
      j["granularity"] = op.granularity;
    if (op.gather_rows)
      j["gather_rows"] = true;
    if (!op.keep.empty())
      j["keep"] = op.keep;
    break;
  case OpKind::MERGE:
    j.update({{"dir", to_string(op.dir)}, {"heads", {op.head_begin, op.head_end}}, {"rows", op.rows},
              {"inputs", op.inputs}, {"bytes", op.bytes}});
    break;
  case OpKind::SEND:
  case OpKind::RECV:
    j.update({{"peer", op.peer}, {"tag", op.tag}, {"bytes", op.bytes}});
    if (!op.regions.empty()) {
      Json regs = Json::array();
      for (const auto& g : op.regions)
        regs.push_back(region_json(g));
      j["regions"] = regs;
    }
    break;
  case OpKind::COLLECTIVE:
    j.update({{"coll", to_string(op.coll)}, {"group_ranks", op.coll_group}, {"tag", op.tag}, {"bytes", op.bytes}});
    if (op.plane >= 0)
      j["plane"] = op.plane;
    break;
  }
  return j;
}

void heads_from(JsonObjectReader& r, Op& op) {
  TokenRange h = range_from(r, "heads");
  op.head_begin = static_cast<int>(h.begin);
  op.head_end = static_cast<int>(h.end);
}

Op op_from_json(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  Op op;
  op.id = static_cast<int>(r.get_int("id", 0));
  op.kind = enum_from(r, "kind", {OpKind::ATTENTION, OpKind::MERGE, OpKind::SEND, OpKind::RECV, OpKind::COLLECTIVE,
                                       OpKind::COMPUTE});
  op.stream = static_cast<int>(r.get_int("stream", 0));
  op.deps = int_list(r, "deps");
  op.group = static_cast<int>(r.get_int_or("group", -1, -1));
  op.label = r.get_string_or("label", "");
  op.reads = string_list(r, "reads");
  op.writes = string_list(r, "writes");
  switch (op.kind) {
  case OpKind::ATTENTION: {
    op.dir = enum_from(r, "dir", {Direction::FORWARD, Direction::BACKWARD});
    heads_from(r, op);
    const Json& segs = r.raw("segments");
    if (!segs.is_array())
      r.fail("segments", "must be an array");
    for (size_t i = 0; i < segs.size(); ++i) {
      JsonObjectReader sr(segs[i], r.path_of("segments") + "[" + std::to_string(i) + "]");
      AttnSegment s;
      s.seq = static_cast<int>(sr.get_int("seq", 0));
      s.q = token_range_from(sr, "q");
      s.k = token_range_from(sr, "k");
      sr.finish();
      op.segments.push_back(s);
    }
    op.cells = r.get_int("cells", 0);
    op.tiles.full = r.get_int("full_tiles", 0);
    op.tiles.partial = r.get_int("partial_tiles", 0);
    op.head_summed = r.get_bool_or("head_summed", false);
    op.head_ids = int_list(r, "head_ids");
    break;
  }
  case OpKind::COMPUTE:
    op.compute = enum_from(r, "compute", {ComputeKind::GATHER, ComputeKind::SCATTER, ComputeKind::LOWRANK_QK,
                                          ComputeKind::TOPK, ComputeKind::COPY});
    op.flops = r.get_int("flops", 0);
    op.bytes = r.get_int("bytes", 0);
    op.granularity = r.get_int_or("granularity", 0, 0);
    op.gather_rows = r.get_bool_or("gather_rows", false);
    if (r.has("keep")) {
      const Json& v = r.raw("keep");
      if (!v.is_array())
        r.fail("keep", "must be an array of integers >= 0");
      for (const Json& e : v) {
        if (!e.is_number_integer() || e.get<int64_t>() < 0)
          r.fail("keep", "must be an array of integers >= 0");
        op.keep.push_back(e.get<int64_t>());
      }
    }
    break;
  case OpKind::MERGE:
    op.dir = enum_from(r, "dir", {Direction::FORWARD, Direction::BACKWARD});
    heads_from(r, op);
    op.rows = r.get_int("rows", 0);
    op.inputs = static_cast<int>(r.get_int("inputs", 1));
    op.bytes = r.get_int_or("bytes", 0, 0);
    break;
  case OpKind::SEND:
  case OpKind::RECV:
    op.peer = static_cast<int>(r.get_int("peer", 0));
    op.tag = static_cast<int>(r.get_int("tag"));
    op.bytes = r.get_int("bytes", 0);
    if (r.has("regions")) {
      const Json& v = r.raw("regions");
      if (!v.is_array())
        r.fail("regions", "must be an array of {buffer, tokens, heads, planes}");
      for (size_t i = 0; i < v.size(); ++i)
        op.regions.push_back(region_from(v[i], r.path_of("regions") + "[" + std::to_string(i) + "]"));
    }
    break;
  case OpKind::COLLECTIVE:
    op.coll = enum_from(r, "coll", {CollectiveKind::ALL_GATHER, CollectiveKind::REDUCE_SCATTER,
                                    CollectiveKind::ALL_TO_ALL, CollectiveKind::ALL_REDUCE});
    op.coll_group = int_list(r, "group_ranks");
    op.tag = static_cast<int>(r.get_int("tag"));
    op.bytes = r.get_int("bytes", 0);
    op.plane = static_cast<int>(r.get_int_or("plane", -1, -1, 1));
    break;
  }
  r.finish();
  return op;
}

Json buffer_to_json(const Buffer& b) {
  Json j{{"name", b.name},     {"tensor", b.tensor},         {"bytes", b.bytes},      {"heads", {b.head_begin, b.head_end}},
         {"tokens", slices_json(b.tokens)}, {"alloc_op", b.alloc_op}, {"free_op", b.free_op}};
  if (!b.head_ids.empty())
    j["head_ids"] = b.head_ids;
  if (!b.dtype.empty())
    j["dtype"] = b.dtype;
  return j;
}

Buffer buffer_from_json(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  Buffer b;
  b.name = r.get_string("name");
  b.tensor = r.get_string("tensor");
  b.bytes = r.get_int("bytes", 0);
  TokenRange h = range_from(r, "heads");
  b.head_begin = static_cast<int>(h.begin);
  b.head_end = static_cast<int>(h.end);
  b.tokens = slices_from(r, "tokens");
  b.alloc_op = static_cast<int>(r.get_int("alloc_op", -1));
  b.free_op = static_cast<int>(r.get_int("free_op", -1));
  b.head_ids = int_list(r, "head_ids");
  b.dtype = r.get_string_or("dtype", "");
  r.finish();
  return b;
}

} // namespace

Json schedule_to_json(const Schedule& s) {
  Json streams = Json::array();
  for (const auto& st : s.streams)
    streams.push_back({{"name", st.name}, {"kind", to_string(st.kind)}});
  Json ranks = Json::array();
  for (const auto& p : s.ranks) {
    Json ops = Json::array(), bufs = Json::array();
    for (const auto& op : p.ops)
      ops.push_back(op_to_json(op));
    for (const auto& b : p.buffers)
      bufs.push_back(buffer_to_json(b));
    ranks.push_back({{"rank", p.rank}, {"buffers", bufs}, {"ops", ops}});
  }
  return Json{{"scheme", s.scheme}, {"pass", to_string(s.pass)}, {"world", s.world}, {"tile_m", s.tile_m},
              {"tile_n", s.tile_n}, {"streams", streams},       {"placement", s.placement}, {"replicas", s.replicas},
              {"replica_stride", s.replica_stride}, {"ranks", ranks}};
}

Schedule schedule_from_json(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  Schedule s;
  s.scheme = r.get_string("scheme");
  s.pass = enum_from(r, "pass", {PassKind::FWD, PassKind::FWD_BWD});
  s.world = static_cast<int>(r.get_int("world", 1, 1 << 24));
  s.tile_m = r.get_int("tile_m", 1, 4096);
  s.tile_n = r.get_int("tile_n", 1, 4096);
  const Json& streams = r.raw("streams");
  if (!streams.is_array())
    r.fail("streams", "must be an array");
  for (size_t i = 0; i < streams.size(); ++i) {
    JsonObjectReader sr(streams[i], r.path_of("streams") + "[" + std::to_string(i) + "]");
    Stream st;
    st.name = sr.get_string("name");
    st.kind = sr.get_enum("kind", {"compute", "comm"}) == "compute" ? StreamKind::COMPUTE : StreamKind::COMM;
    sr.finish();
    s.streams.push_back(st);
  }
  s.placement = int_list(r, "placement");
  s.replicas = static_cast<int>(r.get_int_or("replicas", 1, 1, 1 << 24));
  s.replica_stride = static_cast<int>(r.get_int_or("replica_stride", 0, 0, 1 << 24));
  const Json& ranks = r.raw("ranks");
  if (!ranks.is_array())
    r.fail("ranks", "must be an array");
  for (size_t i = 0; i < ranks.size(); ++i) {
    std::string rp = r.path_of("ranks") + "[" + std::to_string(i) + "]";
    JsonObjectReader rr(ranks[i], rp);
    RankProgram p;
    p.rank = static_cast<int>(rr.get_int("rank", 0));
    const Json& bufs = rr.raw("buffers");
    const Json& ops = rr.raw("ops");
    if (!bufs.is_array() || !ops.is_array())
      rr.fail("ops", "'buffers' and 'ops' must be arrays");
    for (size_t b = 0; b < bufs.size(); ++b)
      p.buffers.push_back(buffer_from_json(bufs[b], rp + ".buffers[" + std::to_string(b) + "]"));
    for (size_t o = 0; o < ops.size(); ++o)
      p.ops.push_back(op_from_json(ops[o], rp + ".ops[" + std::to_string(o) + "]"));
    rr.finish();
    s.ranks.push_back(std::move(p));
  }
  r.finish();
  validate_schedule(s);
  return s;
}

} // namespace cpsim
