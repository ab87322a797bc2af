// Per-rank figures from op records, and the three output forms (table, JSON, Chrome trace).
#include "cpsim/model/timeline.hpp"

#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/memory_model.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace cpsim {

namespace {
using Interval = std::pair<double, double>;

std::vector<Interval> merged(std::vector<Interval> v) {
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const auto& iv : v) {
    if (iv.second <= iv.first)
      continue;
    if (!out.empty() && iv.first <= out.back().second)
      out.back().second = std::max(out.back().second, iv.second);
    else
      out.push_back(iv);
  }
  return out;
}

double length(const std::vector<Interval>& v) {
  double t = 0;
  for (const auto& iv : v)
    t += iv.second - iv.first;
  return t;
}

/** Length of a minus b, both merged. */
double length_minus(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  double t = 0;
  size_t j = 0;
  for (const auto& iv : a) {
    double cur = iv.first;
    while (j < b.size() && b[j].second <= cur)
      ++j;
    size_t k = j;
    while (k < b.size() && b[k].first < iv.second) {
      if (b[k].first > cur)
        t += b[k].first - cur;
      cur = std::max(cur, b[k].second);
      ++k;
    }
    if (cur < iv.second)
      t += iv.second - cur;
  }
  return t;
}
} // namespace

int64_t op_bytes_sent(const Op& op) {
  if (op.kind == OpKind::SEND)
    return op.bytes;
  if (op.kind == OpKind::COLLECTIVE)
    return CommCostModel::collective_bytes_sent(op.coll, static_cast<int>(op.coll_group.size()), op.bytes);
  return 0;
}

SimResult summarize(const Schedule& s, const Workload& w, std::vector<OpRecord> records, std::string engine) {
  SimResult r;
  r.engine = std::move(engine);
  std::vector<std::vector<Interval>> comp(static_cast<size_t>(s.world)), comm(static_cast<size_t>(s.world));
  std::vector<MemoryUse> mem = schedule_memory(s);
  r.ranks.resize(static_cast<size_t>(s.world));
  for (int i = 0; i < s.world; ++i) {
    r.ranks[size_t(i)].rank = i;
    r.ranks[size_t(i)].peak_memory_bytes = mem[size_t(i)].peak_bytes;
  }
  for (const auto& rec : records) {
    CPSIM_ASSERT(rec.rank >= 0 && rec.rank < s.world, "record of an unknown rank");
    const Op& op = s.ranks[size_t(rec.rank)].ops.at(size_t(rec.op));
    RankStats& st = r.ranks[size_t(rec.rank)];
    bool is_compute = s.streams[size_t(op.stream)].kind == StreamKind::COMPUTE;
    (is_compute ? comp : comm)[size_t(rec.rank)].push_back({rec.start_s, rec.end_s});
    st.finish_s = std::max(st.finish_s, rec.end_s);
    if (op.kind == OpKind::ATTENTION)
      st.flops += attention_flops(op, w);
    else if (op.kind == OpKind::COMPUTE)
      st.flops += double(op.flops);
    st.bytes_sent += op_bytes_sent(op);
  }
  for (const auto& st : r.ranks)
    r.step_time_s = std::max(r.step_time_s, st.finish_s);
  for (int i = 0; i < s.world; ++i) {
    RankStats& st = r.ranks[size_t(i)];
    auto c = merged(comp[size_t(i)]), m = merged(comm[size_t(i)]);
    std::vector<Interval> both = c;
    both.insert(both.end(), m.begin(), m.end());
    st.compute_s = length(c);
    st.comm_s = length(m);
    st.exposed_comm_s = length_minus(m, c);
    st.idle_s = std::max(0.0, r.step_time_s - length(merged(both)));
    r.flops += st.flops;
    r.bytes_sent += st.bytes_sent;
  }
  r.records = std::move(records);
  return r;
}

Json result_to_json(const SimResult& r, const Schedule& s) {
  Json ranks = Json::array();
  for (const auto& st : r.ranks)
    ranks.push_back({{"rank", st.rank},
                     {"compute_s", st.compute_s},
                     {"comm_s", st.comm_s},
                     {"exposed_comm_s", st.exposed_comm_s},
                     {"idle_s", st.idle_s},
                     {"finish_s", st.finish_s},
                     {"peak_memory_bytes", st.peak_memory_bytes},
                     {"flops", st.flops},
                     {"bytes_sent", st.bytes_sent}});
  return Json{{"engine", r.engine}, {"scheme", s.scheme},       {"pass", to_string(s.pass)}, {"world", s.world},
              {"step_time_s", r.step_time_s}, {"flops", r.flops}, {"bytes_sent", r.bytes_sent}, {"ranks", ranks}};
}

Json chrome_trace(const SimResult& r, const Schedule& s) {
  Json events = Json::array();
  for (int rank = 0; rank < s.world; ++rank) {
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", rank}, {"args", {{"name", "rank " + std::to_string(rank)}}}});
    for (size_t st = 0; st < s.streams.size(); ++st)
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", rank}, {"tid", st}, {"args", {{"name", s.streams[st].name}}}});
  }
  for (const auto& rec : r.records) {
    const Op& op = s.ranks[size_t(rec.rank)].ops[size_t(rec.op)];
    Json args{{"op", rec.op}, {"kind", to_string(op.kind)}};
    if (op.kind == OpKind::SEND || op.kind == OpKind::RECV)
      args.update({{"peer", op.peer}, {"bytes", op.bytes}});
    if (op.kind == OpKind::COLLECTIVE)
      args.update({{"coll", to_string(op.coll)}, {"bytes", op.bytes}});
    if (op.kind == OpKind::ATTENTION)
      args.update({{"cells", op.cells}, {"tiles", op.tiles.total()}, {"heads", op.heads()}});
    if (op.kind == OpKind::COMPUTE)
      args.update({{"compute", to_string(op.compute)}, {"flops", op.flops}, {"bytes", op.bytes}});
    events.push_back({{"name", op.label.empty() ? to_string(op.kind) : op.label},
                      {"cat", to_string(op.kind)},
                      {"ph", "X"},
                      {"ts", rec.start_s * 1e6},
                      {"dur", (rec.end_s - rec.start_s) * 1e6},
                      {"pid", rec.rank},
                      {"tid", op.stream},
                      {"args", args}});
  }
  return Json{{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

std::string result_table(const SimResult& r) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "step time: %.3f ms   total: %.3f TFLOP, %.3f GB sent   (engine: %s)\n",
                r.step_time_s * 1e3, r.flops / 1e12, double(r.bytes_sent) / 1e9, r.engine.c_str());
  os << line;
  os << "rank  compute_ms  comm_ms  exposed_comm_ms  idle_ms  peak_mem_GiB  TFLOP  sent_GB\n";
  for (const auto& st : r.ranks) {
    std::snprintf(line, sizeof line, "%4d  %10.3f  %7.3f  %15.3f  %7.3f  %12.3f  %5.2f  %7.3f\n", st.rank,
                  st.compute_s * 1e3, st.comm_s * 1e3, st.exposed_comm_s * 1e3, st.idle_s * 1e3,
                  double(st.peak_memory_bytes) / (1024.0 * 1024.0 * 1024.0), st.flops / 1e12, double(st.bytes_sent) / 1e9);
    os << line;
  }
  return os.str();
}

} // namespace cpsim
