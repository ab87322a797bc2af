// The scheme search behind `cpsim compare` (see compare.hpp). Generic over the registry: a scheme
// joins the search by being registered, and its degrees by a variants hook in its SchemeInfo.
#include "compare.hpp"

#include "inputs.hpp"

#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/calibrate/predict.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/simulator/analytic_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace cpsim {

namespace {
/** "k=v k=v" with string values unquoted, for the table. */
std::string options_text(const Json& o) {
  std::string s;
  for (auto it = o.begin(); it != o.end(); ++it)
    s += (s.empty() ? "" : " ") + it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump());
  return s.empty() ? "-" : s;
}

CompareEntry run_one(const Scenario& base, const MaskGeometry& mask, const SchemeInfo& info, const Json& options) {
  CompareEntry e;
  e.scheme = info.name;
  e.options = options;
  Scenario sc = base;
  sc.parallel.scheme = info.name;
  sc.parallel.options = options;
  Schedule s;
  try {
    auto t0 = std::chrono::steady_clock::now();
    s = info.generate(sc, mask);
    e.planning_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } catch (const UserError& err) {
    e.reason = err.what();
    return e;
  }
  calib::CostModels models = calib::make_cost_models(sc.profile, sc.cluster, sc.workload, s);
  SimResult r;
  try {
    r = calib::predict(s, sc.workload, models);
  } catch (const UserError& err) { // a plan the engine cannot run is a bug to show, not a fit problem
    e.reason = std::string("simulation failed: ") + err.what();
    return e;
  }
  e.notes = models.notes->lines();
  e.step_time_s = r.step_time_s;
  e.flops = r.flops;
  e.bytes_sent = r.bytes_sent;
  for (const auto& st : r.ranks) {
    e.compute_s += st.compute_s / double(r.ranks.size());
    e.exposed_comm_s += st.exposed_comm_s / double(r.ranks.size());
    e.idle_s += st.idle_s / double(r.ranks.size());
    e.peak_memory_bytes = std::max(e.peak_memory_bytes, st.peak_memory_bytes);
  }
  e.fits_memory = double(e.peak_memory_bytes) <= sc.cluster.gpu.memory_bytes;
  return e;
}

} // namespace

Comparison compare_schemes(const Scenario& sc) {
  MaskGeometry mask(sc.workload); // built once: block-sparse layouts are the costly part
  Comparison c;
  for (const SchemeInfo& info : scheme_registry()) {
    std::vector<Json> variants = info.variants ? info.variants(sc) : std::vector<Json>{Json::object()};
    // The scenario's own options join unless a variant already says the same (and maybe more).
    auto covers = [&](const Json& v) {
      for (auto it = sc.parallel.options.begin(); it != sc.parallel.options.end(); ++it)
        if (!v.contains(it.key()) || v.at(it.key()) != it.value())
          return false;
      return true;
    };
    if (info.name == sc.parallel.scheme && std::none_of(variants.begin(), variants.end(), covers))
      variants.insert(variants.begin(), sc.parallel.options);
    for (const Json& v : variants) {
      CompareEntry e = run_one(sc, mask, info, v);
      (e.reason.empty() ? c.ranked : c.not_applicable).push_back(std::move(e));
    }
  }
  // Ties keep registry order, so the listing is deterministic.
  std::stable_sort(c.ranked.begin(), c.ranked.end(),
                   [](const CompareEntry& a, const CompareEntry& b) { return a.step_time_s < b.step_time_s; });
  return c;
}

Json comparison_to_json(const Comparison& c, const Scenario& sc) {
  Json ranked = Json::array(), na = Json::array();
  for (size_t i = 0; i < c.ranked.size(); ++i) {
    const CompareEntry& e = c.ranked[i];
    ranked.push_back({{"rank", i + 1},
                      {"scheme", e.scheme},
                      {"options", e.options},
                      {"step_time_s", e.step_time_s},
                      {"compute_s", e.compute_s},
                      {"exposed_comm_s", e.exposed_comm_s},
                      {"idle_s", e.idle_s},
                      {"peak_memory_bytes", e.peak_memory_bytes},
                      {"fits_memory", e.fits_memory},
                      {"flops", e.flops},
                      {"bytes_sent", e.bytes_sent},
                      {"planning_time_s", e.planning_time_s},
                      {"calibration_notes", e.notes}});
  }
  for (const CompareEntry& e : c.not_applicable)
    na.push_back({{"scheme", e.scheme}, {"options", e.options}, {"reason", e.reason}});
  return Json{{"engine", "analytic"},
              {"git_sha", git_sha()},
              {"profile", sc.profile.empty() ? Json(nullptr) : Json(sc.profile)},
              {"scenario", scenario_to_json(sc)},
              {"memory_capacity_bytes", sc.cluster.gpu.memory_bytes},
              {"breakdown", "compute_s + exposed_comm_s + idle_s = step_time_s, each the mean over ranks"},
              {"results", ranked},
              {"not_applicable", na}};
}

std::string comparison_table(const Comparison& c, const Scenario& sc) {
  std::ostringstream os;
  char line[512];
  std::snprintf(line, sizeof line, "scenario: %s   hardware: %s   cp: %d   dp: %d   pass: %s   engine: analytic\n",
                sc.name.c_str(), sc.cluster.name.c_str(), sc.parallel.cp, sc.parallel.dp, to_string(sc.pass).c_str());
  os << line << "breakdown columns are means over ranks (compute + exposed comm + idle = step time)\n";
  os << "  #  scheme        step_ms  compute_ms  exposed_comm_ms  idle_ms  peak_mem_GiB  fits  options\n";
  for (size_t i = 0; i < c.ranked.size(); ++i) {
    const CompareEntry& e = c.ranked[i];
    std::snprintf(line, sizeof line, "%3zu  %-12s %8.3f  %10.3f  %15.3f  %7.3f  %12.2f  %-4s  %s\n", i + 1,
                  e.scheme.c_str(), e.step_time_s * 1e3, e.compute_s * 1e3, e.exposed_comm_s * 1e3, e.idle_s * 1e3,
                  double(e.peak_memory_bytes) / (1024.0 * 1024.0 * 1024.0), e.fits_memory ? "yes" : "NO",
                  options_text(e.options).c_str());
    os << line;
  }
  for (size_t i = 0; i < c.ranked.size(); ++i)
    for (const auto& n : c.ranked[i].notes)
      os << "calibration note (#" << i + 1 << " " << c.ranked[i].scheme << "): " << n << "\n";
  if (!c.not_applicable.empty()) {
    os << "not applicable:\n";
    for (const CompareEntry& e : c.not_applicable)
      os << "  " << e.scheme << (e.options.empty() ? "" : " (" + options_text(e.options) + ")") << ": " << e.reason << "\n";
  }
  return os.str();
}

int cmd_compare(const CompareOptions& o) {
  Scenario sc = load_scenario(o.input);
  if (!o.profile.empty())
    sc.profile = o.profile;
  Comparison c = compare_schemes(sc);
  if (c.ranked.empty())
    throw UserError("no scheme applies to '" + o.input + "':\n" + comparison_table(c, sc));
  std::fputs(comparison_table(c, sc).c_str(), stdout);
  if (!o.json_out.empty())
    save_json_file(o.json_out, comparison_to_json(c, sc), 2);
  return 0;
}

} // namespace cpsim
