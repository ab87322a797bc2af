// `cpsim run`: launcher mode, rank mode and mpirun mode, and the outputs written once all ranks reported.
#include "cpsim/hardware/backend/run.hpp"

#include "rank_main.hpp"

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/backend/launcher.hpp"
#include "cpsim/hardware/backend/measured_result.hpp"
#include "cpsim/hardware/backend/rendezvous.hpp"
#include "cpsim/hardware/backend/wire_plan.hpp"
#include "cpsim/model/errors.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace cpsim::backend {

namespace {
int finish(const Schedule& s, const Scenario& sc, const RunOptions& o, const std::string& dir) {
  std::vector<Json> reports;
  for (int r = 0; r < s.world; ++r)
    reports.push_back(Json::parse(wait_for_file(dir, "rank_" + std::to_string(r) + ".json", o.timeout_s,
                                                "rank " + std::to_string(r) + "'s report")));
  Measured m = aggregate(s, sc.workload, reports);
  m.json["input"] = o.input;
  m.json["scenario"] = scenario_to_json(sc);
  m.json["options"] = {{"warmup", o.warmup}, {"reps", o.reps}, {"profile_reps", o.profile_reps},
                       {"comm_only", o.comm_only}, {"loopback", o.loopback}};
  m.json["transport"] = reports[0].value("transport", std::string("nccl"));
  if (o.loopback) // whoever reads the file (validate, calibrate --from-run) must not take these times for the plan's
    m.json["loopback"] = {{"device", reports[0].at("device").at("index")},
                          {"note", "all " + std::to_string(s.world) + " ranks time-shared one GPU: step and op times are "
                                   "not those of the plan; the run checks numerics"}};
  if (!o.json_out.empty())
    save_json_file(o.json_out, m.json, 2);
  if (!o.trace_out.empty())
    save_json_file(o.trace_out, m.trace, -1);
  if (!o.quiet) {
    std::printf("measured on %s: scheme %s, pass %s, %d ranks, median of %d repetitions\n",
                reports[0].at("device").at("name").get<std::string>().c_str(), s.scheme.c_str(),
                to_string(s.pass).c_str(), s.world, o.reps);
    if (o.loopback)
      std::printf("LOOPBACK (%s): all %d ranks time-shared one GPU; the times below are NOT those of the plan\n",
                  m.json["transport"].get<std::string>().c_str(), s.world);
    std::fputs(result_table(m.median).c_str(), stdout);
    if (m.json.contains("profile"))
      std::printf("profiling overhead (CUPTI kernel activity): %.2f %% of the step\n",
                  100 * m.json["profile"]["overhead_fraction"].get<double>());
  }
  if (!o.quiet && m.json.contains("check"))
    std::fputs(check_table(m.json["check"]).c_str(), stdout);
  if (!m.check_ok) {
    std::fprintf(stderr, "cpsim: error: --check failed: the CP result differs from single-GPU attention beyond bf16 tolerance\n");
    return 1;
  }
  return 0;
}
} // namespace

int run_backend(const Schedule& s, const Scenario& sc, const RunOptions& o_in, const std::vector<std::string>& self_argv) {
  check_run_options(o_in);
  RunOptions o = o_in;
  if (o.check && o.comm_only)
    throw UserError("--check needs the compute ops: drop --comm-only");
  ExecPlan plan = make_exec_plan(s, sc.workload);
  const WirePlan wire = make_wire_plan(s, plan); // refuses unmatched sends before any rank starts
  ExternalRank ext = external_rank_from_env();
  if (o.loopback && o.rank < 0 && ext.rank >= 0)
    throw UserError("--loopback runs every rank on one GPU of this host, started by cpsim itself; run it without mpirun/srun");
  if (o.rank < 0 && ext.rank >= 0) { // started by mpirun/srun: this process is one rank
    if (ext.world != s.world)
      throw UserError("mpirun started " + std::to_string(ext.world) + " processes but the plan has " +
                      std::to_string(s.world) + " ranks");
    if (o.rendezvous_dir.empty())
      throw UserError("under mpirun, --rendezvous DIR must name a directory every node can read and write");
    o.rank = ext.rank;
    o.world = ext.world;
    int rc = run_rank(s, sc, plan, wire, o, ext.local_rank);
    return rc != 0 || o.rank != 0 ? rc : finish(s, sc, o, o.rendezvous_dir);
  }
  if (o.rank >= 0) { // a child of the local launcher
    if (o.world != s.world)
      throw UserError("--world " + std::to_string(o.world) + " differs from the plan's " + std::to_string(s.world) + " ranks");
    return run_rank(s, sc, plan, wire, o, -1);
  }
  const std::string dir = o.rendezvous_dir.empty() ? make_run_dir() : o.rendezvous_dir;
  auto argv_of = [&](int r) {
    std::vector<std::string> a = self_argv;
    a.insert(a.end(), {"--rank", std::to_string(r), "--world", std::to_string(s.world), "--rendezvous", dir, "-q"});
    return a;
  };
  auto env_of = [](int) { return std::vector<std::string>{"NCCL_NVLS_ENABLE=0"}; };
  const double budget_s = o.timeout_s * 3 + 60.0 * (1 + o.warmup + o.reps + o.profile_reps);
  LaunchReport rep = launch_local(s.world, argv_of, env_of, budget_s);
  if (!rep.ok) {
    std::fprintf(stderr, "cpsim: error: run failed: %s\n", rep.cause.c_str());
    for (const auto& c : rep.outcomes)
      if (c.rank != rep.failed_rank)
        std::fprintf(stderr, "cpsim:   rank %d %s%s\n", c.rank, describe_outcome(c).c_str(),
                     c.killed_by_launcher ? " (stopped by the launcher)" : "");
    return rep.exit_code != 0 ? rep.exit_code : 3;
  }
  int rc = finish(s, sc, o, dir);
  if (o.rendezvous_dir.empty())
    std::filesystem::remove_all(dir);
  return rc;
}

} // namespace cpsim::backend
