// cpsim entry point: option parsing and the one place where user errors become exit code 2.
#include "commands.hpp"
#include "compare.hpp"
#include "run_command.hpp"

#include "cpsim/model/errors.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  using namespace cpsim;
  CLI::App app{"cpsim: predict, run and compare context-parallel attention schedules on GPU clusters"};
  app.require_subcommand(1);

  PlanOptions plan;
  auto* p = app.add_subcommand("plan", "Generate the schedule IR of a scenario (dry run) and write it as JSON");
  p->add_option("scenario", plan.input, "Scenario JSON file")->required();
  p->add_option("-o,--output", plan.output, "Plan JSON to write")->required();

  SimulateOptions sim;
  auto* s = app.add_subcommand("simulate", "Predict the step time of a scenario or plan and print the per-rank table");
  s->add_option("input", sim.input, "Scenario JSON or plan JSON (from 'cpsim plan')")->required();
  s->add_option("--engine", sim.engine, "Engine: analytic (max-plus, no contention) or des (SimGrid, flow-level sharing)")->capture_default_str();
  s->add_option("--json", sim.json_out, "Write the result as JSON to this file");
  s->add_option("--trace", sim.trace_out, "Write a Chrome/Perfetto trace to this file");
  s->add_flag("--allow-oom", sim.allow_oom, "Simulate even if a rank's peak memory exceeds the GPU's");
  s->add_flag("-q,--quiet", sim.quiet, "Do not print the table");

  CompareOptions cmp;
  auto* c = app.add_subcommand("compare", "Simulate every scheme (and degree choice) that applies to a scenario, ranked");
  c->add_option("scenario", cmp.input, "Scenario JSON file (its scheme and options are one more variant)")->required();
  c->add_option("--json", cmp.json_out, "Write the ranking as JSON to this file");

  backend::RunOptions run;
  auto* rn = add_run_command(app, run);

  auto* ls = app.add_subcommand("schemes", "List the parallel schemes cpsim can plan");
  auto* lh = app.add_subcommand("hardware", "List the built-in hardware descriptions");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    if (p->parsed())
      return cmd_plan(plan);
    if (s->parsed())
      return cmd_simulate(sim);
    if (c->parsed())
      return cmd_compare(cmp);
    if (rn->parsed())
      return cmd_run(run);
    if (ls->parsed())
      return cmd_list_schemes();
    if (lh->parsed())
      return cmd_list_hardware();
  } catch (const UserError& e) {
    std::fprintf(stderr, "cpsim: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpsim: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
