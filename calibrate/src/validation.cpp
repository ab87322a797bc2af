// Predicted-vs-measured rows, summaries and their renderings (see validation.hpp).
#include "cpsim/calibrate/validation.hpp"

#include "cpsim/calibrate/stats.hpp"
#include "cpsim/model/errors.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace cpsim::calib {

std::string op_kind_name(const Op& op) {
  switch (op.kind) {
  case OpKind::ATTENTION:
    return op.dir == Direction::FORWARD ? "attention fwd" : "attention bwd";
  case OpKind::MERGE:
    return op.dir == Direction::FORWARD ? "merge fwd" : "merge bwd";
  case OpKind::SEND:
  case OpKind::RECV:
    return "p2p";
  case OpKind::COLLECTIVE:
    return to_string(op.coll);
  case OpKind::COMPUTE:
    return "compute";
  }
  return "?";
}

void add_scenario(ValidationReport& rep, const std::string& scenario, const Schedule& s, const SimResult& predicted,
                  const Json& measured, const std::string& path) {
  auto bad = [&](const std::string& why) {
    throw UserError("measured result '" + path + "' for scenario '" + scenario + "': " + why);
  };
  if (!measured.is_object() || !measured.contains("ops") || !measured.at("ops").is_array() ||
      !measured.contains("step_time_s") || !measured.at("step_time_s").is_number())
    bad("needs step_time_s and ops[] (the output of `cpsim run --json`)");
  size_t total = 0;
  for (const auto& p : s.ranks)
    total += p.ops.size();
  const Json& ops = measured.at("ops");
  if (ops.size() != total)
    bad("it has " + std::to_string(ops.size()) + " ops, the scenario's plan has " + std::to_string(total) +
        " (was it measured from another plan?)");
  std::map<std::pair<int, int>, double> pred;
  for (const auto& r : predicted.records)
    pred[{r.rank, r.op}] = r.end_s - r.start_s;
  std::map<std::string, std::pair<double, double>> kinds; // kind -> (predicted, measured) sums
  std::vector<ValidationRow> op_rows;
  for (size_t i = 0; i < ops.size(); ++i) {
    JsonObjectReader r(ops[i], "ops[" + std::to_string(i) + "]");
    const int rank = int(r.get_int("rank", 0, s.world - 1));
    const auto& prog = s.ranks[size_t(rank)].ops;
    const int op = int(r.get_int("op", 0, int64_t(prog.size()) - 1));
    const Op& o = prog[size_t(op)];
    if (r.has("label") && r.raw("label") != o.label)
      bad("op " + std::to_string(op) + " of rank " + std::to_string(rank) + " is " + json_value_text(r.raw("label")) +
          " there but '" + o.label + "' in the plan");
    const double m = r.get_number("median_s");
    if (!(m > 0))
      bad("op " + std::to_string(op) + " of rank " + std::to_string(rank) + " has median_s " + std::to_string(m) +
          " (must be > 0)");
    const double p = pred.at({rank, op});
    const std::string kind = op_kind_name(o);
    kinds[kind].first += p;
    kinds[kind].second += m;
    op_rows.push_back({scenario, "op", o.label, rank, op, p, m, rel_err(p, m)});
  }
  const double ms = measured.at("step_time_s").get<double>();
  if (!(ms > 0))
    bad("step_time_s must be > 0");
  rep.rows.push_back({scenario, "step", "step", -1, -1, predicted.step_time_s, ms, rel_err(predicted.step_time_s, ms)});
  for (const auto& [kind, pm] : kinds)
    rep.rows.push_back({scenario, "kind", kind, -1, -1, pm.first, pm.second, rel_err(pm.first, pm.second)});
  // op rows are summarised under their kind; the label alone does not say it
  for (auto& row : op_rows) {
    const Op& o = s.ranks[size_t(row.rank)].ops[size_t(row.op)];
    row.item = op_kind_name(o) + ": " + o.label;
    rep.rows.push_back(row);
  }
}

std::vector<ErrorSummary> summarize(const ValidationReport& rep) {
  std::map<std::pair<std::string, std::string>, std::vector<double>> groups;
  for (const auto& r : rep.rows) {
    if (r.level == "step")
      groups[{"step", "step"}].push_back(std::abs(r.rel_err));
    else if (r.level == "op")
      groups[{"op", r.item.substr(0, r.item.find(':'))}].push_back(std::abs(r.rel_err));
  }
  std::vector<ErrorSummary> out;
  for (const auto& [key, e] : groups) {
    double mx = 0;
    for (double x : e)
      mx = std::max(mx, x);
    out.push_back({key.first, key.second, int(e.size()), median(e), percentile(e, 95), mx});
  }
  std::stable_sort(out.begin(), out.end(), [](const ErrorSummary& a, const ErrorSummary& b) {
    return (a.level == "step") > (b.level == "step");
  });
  return out;
}

std::string validation_table(const ValidationReport& rep) {
  std::ostringstream os;
  char line[512];
  os << "scenario                         item                predicted_ms  measured_ms   rel_err\n";
  for (const auto& r : rep.rows) {
    if (r.level == "op")
      continue;
    std::snprintf(line, sizeof line, "%-32s %-18s %13.4f %12.4f %+8.2f%%\n", r.scenario.c_str(),
                  (r.level == "step" ? std::string("step") : "  " + r.item).c_str(), r.predicted_s * 1e3,
                  r.measured_s * 1e3, 100 * r.rel_err);
    os << line;
  }
  os << "\n|relative error|        n   median      p95      max\n";
  for (const auto& s : summarize(rep)) {
    std::snprintf(line, sizeof line, "%-20s %6d %7.2f%% %7.2f%% %7.2f%%\n",
                  (s.level == "step" ? std::string("step time") : "op: " + s.item).c_str(), s.n, 100 * s.median_abs,
                  100 * s.p95_abs, 100 * s.max_abs);
    os << line;
  }
  for (const auto& n : rep.notes)
    os << "calibration note: " << n << "\n";
  return os.str();
}

std::string validation_csv(const ValidationReport& rep) {
  std::ostringstream os;
  os << "scenario,level,item,rank,op,predicted_s,measured_s,rel_err\n";
  auto quoted = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s)
      q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  char num[128];
  for (const auto& r : rep.rows) {
    std::snprintf(num, sizeof num, "%d,%d,%.9g,%.9g,%.6g", r.rank, r.op, r.predicted_s, r.measured_s, r.rel_err);
    os << quoted(r.scenario) << "," << r.level << "," << quoted(r.item) << "," << num << "\n";
  }
  return os.str();
}

Json validation_json(const ValidationReport& rep) {
  Json rows = Json::array(), sums = Json::array();
  for (const auto& r : rep.rows)
    rows.push_back({{"scenario", r.scenario},
                    {"level", r.level},
                    {"item", r.item},
                    {"rank", r.rank},
                    {"op", r.op},
                    {"predicted_s", r.predicted_s},
                    {"measured_s", r.measured_s},
                    {"rel_err", r.rel_err}});
  for (const auto& s : summarize(rep))
    sums.push_back({{"level", s.level},
                    {"item", s.item},
                    {"n", s.n},
                    {"median_abs_rel_err", s.median_abs},
                    {"p95_abs_rel_err", s.p95_abs},
                    {"max_abs_rel_err", s.max_abs}});
  return {{"rows", rows}, {"summary", sums}, {"notes", rep.notes}};
}

} // namespace cpsim::calib
