// plan / simulate / listings. Output files go through save_json_file (written whole or not at all).
#include "commands.hpp"

#include "inputs.hpp"

#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/calibrate/predict.hpp"
#include "cpsim/calibrate/profile.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/simulator/analytic_engine.hpp"
#include "cpsim/simulator/des_engine.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace cpsim {

namespace {
void check_memory_fits(const SimResult& r, const Scenario& sc) {
  for (const auto& st : r.ranks)
    if (double(st.peak_memory_bytes) > sc.cluster.gpu.memory_bytes) {
      char msg[256];
      std::snprintf(msg, sizeof msg, "rank %d needs %.2f GiB at its peak but the %s has %.2f GiB", st.rank,
                    double(st.peak_memory_bytes) / (1 << 30), sc.cluster.gpu.name.c_str(),
                    sc.cluster.gpu.memory_bytes / (1 << 30));
      throw UserError(std::string("schedule does not fit in GPU memory: ") + msg +
                      " (use --allow-oom to simulate anyway)");
    }
}
} // namespace

int cmd_plan(const PlanOptions& o) {
  LoadedInput in = load_input(o.input);
  if (!o.profile.empty()) {
    calib::load_profile(o.profile); // a bad profile fails now, not at simulate time
    in.scenario.profile = std::filesystem::absolute(o.profile).lexically_normal().string();
  }
  save_json_file(o.output, plan_to_json(in), -1);
  std::size_t ops = 0;
  for (const auto& r : in.schedule.ranks)
    ops += r.ops.size();
  std::printf("planned %s (%s) on %d ranks: %zu ops, planning took %.3f s -> %s\n", in.schedule.scheme.c_str(),
              to_string(in.schedule.pass).c_str(), in.schedule.world, ops, in.planning_time_s, o.output.c_str());
  return 0;
}

int cmd_simulate(const SimulateOptions& o) {
  LoadedInput in = load_input(o.input);
  const Scenario& sc = in.scenario;
  calib::CostModels models =
      calib::make_cost_models(o.profile.empty() ? sc.profile : o.profile, sc.cluster, sc.workload, in.schedule);
  SimResult r;
  Json des_json; // what the discrete-event engine simulated, kept in the result file
  if (o.engine == "analytic") {
    r = calib::predict(in.schedule, sc.workload, models);
  } else if (o.engine == "des") {
    // the discrete-event engine prices compute with the (calibrated) kernel model, the network with its fabric
    DesStats st;
    r = run_des(in.schedule, sc.workload, sc.cluster, *models.kernels, &st);
    if (models.profile)
      models.notes->note("des engine: communication is priced by its fabric model; the profile prices compute only");
    des_json = Json{{"replicas", st.replicas},         {"components", st.components},
                    {"classes", st.classes},           {"simulated_replicas", st.simulated_replicas},
                    {"reported_replica", st.reported_replica}, {"hosts", st.hosts},
                    {"links", st.links},               {"flows", st.flows},
                    {"compute_ops", st.execs},         {"setup_wall_s", st.setup_wall_s},
                    {"run_wall_s", st.run_wall_s}};
    if (!o.quiet) // stderr, so that stdout is the same table whichever engine ran
      std::fprintf(stderr,
                   "des: %d replica(s) in %d contention component(s) of %d kind(s); simulated %d "
                   "(%lld hosts, %lld links, %lld flows, %lld compute ops); reporting replica %d; "
                   "setup %.3f s, event loop %.3f s\n",
                   st.replicas, st.components, st.classes, st.simulated_replicas, (long long)st.hosts,
                   (long long)st.links, (long long)st.flows, (long long)st.execs, st.reported_replica, st.setup_wall_s,
                   st.run_wall_s);
  } else {
    throw UserError("--engine = \"" + o.engine + "\": unknown engine; known: analytic, des");
  }
  if (!o.allow_oom)
    check_memory_fits(r, sc);
  if (!o.quiet) {
    std::printf("scenario: %s   scheme: %s   pass: %s   cp: %d   hardware: %s\n", sc.name.c_str(),
                in.schedule.scheme.c_str(), to_string(in.schedule.pass).c_str(), in.schedule.world,
                sc.cluster.name.c_str());
    std::fputs(result_table(r).c_str(), stdout);
    if (models.profile)
      std::printf("cost model: profile %s (%s, %s)\n", models.profile_path.c_str(), models.profile->gpu_name.c_str(),
                  models.profile->date_utc.c_str());
    for (const auto& n : models.notes->lines())
      std::printf("calibration note: %s\n", n.c_str());
  }
  if (!o.json_out.empty()) {
    Json j = result_to_json(r, in.schedule);
    j["git_sha"] = git_sha();
    j["input"] = o.input;
    j["planning_time_s"] = in.planning_time_s;
    j["scenario"] = scenario_to_json(sc);
    j["memory_capacity_bytes"] = sc.cluster.gpu.memory_bytes;
    if (!des_json.is_null())
      j["des"] = des_json;
    j["cost_model"] = models.to_json();
    save_json_file(o.json_out, j, 2);
  }
  if (!o.trace_out.empty())
    save_json_file(o.trace_out, chrome_trace(r, in.schedule), -1);
  return 0;
}

int cmd_list_schemes() {
  for (const auto& s : scheme_registry())
    std::printf("%-10s %s\n", s.name.c_str(), s.summary.c_str());
  return 0;
}

int cmd_list_hardware() {
  for (const auto& n : builtin_hardware_names()) {
    ClusterSpec c = cluster_from_json(builtin_hardware(n), n);
    std::printf("%-14s %d x %d %s\n", n.c_str(), c.nodes, c.gpus_per_node, c.gpu.name.c_str());
  }
  return 0;
}

} // namespace cpsim
