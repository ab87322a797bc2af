// Aggregation of rank reports (see the header).
#include "cpsim/hardware/backend/measured_result.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <cstdio>
#include <map>

namespace cpsim::backend {

namespace {
std::vector<OpRecord> records_of(const std::vector<Json>& reports, const char* key, size_t rep) {
  std::vector<OpRecord> recs;
  for (size_t r = 0; r < reports.size(); ++r)
    for (const auto& x : reports[r].at(key).at(rep))
      recs.push_back({int(r), x.at(0).get<int>(), x.at(1).get<double>(), x.at(2).get<double>()});
  return recs;
}

Json op_table(const Schedule& s, const std::vector<SimResult>& reps) {
  std::map<std::pair<int, int>, std::vector<double>> durs;
  for (const auto& r : reps)
    for (const auto& rec : r.records)
      durs[{rec.rank, rec.op}].push_back(rec.end_s - rec.start_s);
  Json ops = Json::array();
  for (const auto& [key, d] : durs) {
    const Op& op = s.ranks[size_t(key.first)].ops[size_t(key.second)];
    double med = median_of(d);
    Json j{{"rank", key.first}, {"op", key.second}, {"label", op.label}, {"kind", to_string(op.kind)},
           {"stream", s.streams[size_t(op.stream)].name}, {"median_s", med},
           {"min_s", *std::min_element(d.begin(), d.end())}};
    int64_t sent = op_bytes_sent(op);
    if (sent > 0 && med > 0) {
      j["bytes_sent"] = sent;
      j["achieved_bytes_per_s"] = double(sent) / med;
    }
    ops.push_back(j);
  }
  return ops;
}
} // namespace

double median_of(std::vector<double> v) {
  CPSIM_ASSERT(!v.empty(), "median of nothing");
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

Measured aggregate(const Schedule& s, const Workload& w, const std::vector<Json>& reports) {
  CPSIM_ASSERT(int(reports.size()) == s.world, "one report per rank");
  Measured m;
  const size_t n = reports[0].at("reps").size();
  std::vector<SimResult> reps;
  for (size_t k = 0; k < n; ++k) {
    reps.push_back(summarize(s, w, records_of(reports, "reps", k), "gpu"));
    m.step_times_s.push_back(reps.back().step_time_s);
  }
  const double med = median_of(m.step_times_s);
  size_t pick = 0;
  for (size_t k = 0; k < n; ++k)
    if (m.step_times_s[k] == med)
      pick = k;
  m.median = reps[pick];
  for (size_t k = 0; k < reports[0].value("profiled_reps", Json::array()).size(); ++k)
    m.profiled_step_times_s.push_back(summarize(s, w, records_of(reports, "profiled_reps", k), "gpu").step_time_s);

  Json memory = Json::array(), checks = Json::array(), kernels = Json::array(), devices = Json::array();
  for (size_t r = 0; r < reports.size(); ++r) {
    const Json& rep = reports[r];
    RankStats& st = m.median.ranks[r];
    Json mem = rep.at("memory");
    mem["rank"] = int(r);
    mem["model_peak_bytes"] = st.peak_memory_bytes;
    st.peak_memory_bytes = mem.at("allocated_bytes").get<int64_t>(); // measured, not modelled
    memory.push_back(mem);
    devices.push_back(rep.at("device"));
    if (rep.contains("check")) {
      Json c = rep.at("check");
      c["rank"] = int(r);
      for (const auto& [k, v] : rep.at("check").items())
        if (v.is_object() && !v.value("ok", true))
          m.check_ok = false;
      checks.push_back(c);
    }
    if (rep.contains("kernel_summary"))
      kernels.push_back({{"rank", int(r)}, {"kernels", rep.at("kernel_summary")}});
  }
  m.json = result_to_json(m.median, s);
  m.json["step_times_s"] = m.step_times_s;
  m.json["median_rep"] = pick;
  m.json["ops"] = op_table(s, reps);
  m.json["memory"] = memory;
  m.json["devices"] = devices;
  if (!checks.empty()) {
    m.json["check"] = checks;
    m.json["check_ok"] = m.check_ok;
  }
  if (!m.profiled_step_times_s.empty()) {
    double on = median_of(m.profiled_step_times_s);
    m.json["profile"] = {{"profiled_step_times_s", m.profiled_step_times_s},
                         {"profiled_median_s", on},
                         {"overhead_fraction", med > 0 ? (on - med) / med : 0.0},
                         {"kernels_per_rank", kernels}};
  }

  m.trace = chrome_trace(m.median, s);
  for (size_t r = 0; r < reports.size(); ++r) {
    std::map<int64_t, bool> named;
    for (const auto& k : reports[r].value("kernel_records", Json::array())) {
      int64_t tid = 1000 + k.at("stream").get<int64_t>();
      if (!named[tid]) {
        named[tid] = true;
        m.trace["traceEvents"].push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", int(r)}, {"tid", tid},
                                          {"args", {{"name", "CUDA stream " + std::to_string(tid - 1000) + " (CUPTI)"}}}});
      }
      m.trace["traceEvents"].push_back({{"name", k.at("name")}, {"cat", "kernel"}, {"ph", "X"},
                                        {"ts", k.at("start_s").get<double>() * 1e6},
                                        {"dur", (k.at("end_s").get<double>() - k.at("start_s").get<double>()) * 1e6},
                                        {"pid", int(r)}, {"tid", tid}, {"args", {{"grid", k.at("grid")}, {"block", k.at("block")}}}});
    }
  }
  return m;
}

std::string check_table(const Json& checks) {
  std::string t = "check (vs single-GPU attention)  rank  tensor  rel_l2      max_abs     ok\n";
  char line[160];
  for (const Json& c : checks)
    for (const auto& [k, v] : c.items()) {
      if (!v.is_object())
        continue;
      if (v.contains("rel_l2") && v.at("rel_l2").is_number() && v.at("rel_l2").get<double>() >= 0)
        std::snprintf(line, sizeof line, "                                 %4d  %-6s  %-10.3e  %-10.3e  %s\n", c.value("rank", -1),
                      k.c_str(), v.at("rel_l2").get<double>(),
                      v.contains("max_abs") && v.at("max_abs").is_number() ? v.at("max_abs").get<double>() : -1.0,
                      v.value("ok", false) ? "yes" : "NO");
      else
        std::snprintf(line, sizeof line, "                                 %4d  %-6s  %s: %s\n", c.value("rank", -1), k.c_str(),
                      v.value("ok", false) ? "yes" : "NO", v.value("why", std::string("not checked")).c_str());
      t += line;
    }
  return t;
}

} // namespace cpsim::backend
