// cpsim entry point: option parsing and the one place where user errors become exit code 2.
#include "calibrate_command.hpp"
#include "commands.hpp"
#include "compare.hpp"
#include "emulate_command.hpp"
#include "run_command.hpp"
#include "validate_command.hpp"

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
  p->add_option("--profile", plan.profile, "Calibrated profile (hardware/profiles/<name>.json) recorded in the plan");

  SimulateOptions sim;
  auto* s = app.add_subcommand("simulate", "Predict the step time of a scenario or plan and print the per-rank table");
  s->add_option("input", sim.input, "Scenario JSON or plan JSON (from 'cpsim plan')")->required();
  s->add_option("--engine", sim.engine, "Engine: analytic (max-plus, no contention) or des (SimGrid, flow-level sharing)")->capture_default_str();
  s->add_option("--json", sim.json_out, "Write the result as JSON to this file");
  s->add_option("--trace", sim.trace_out, "Write a Chrome/Perfetto trace to this file");
  s->add_option("--profile", sim.profile, "Calibrated profile (hardware/profiles/<name>.json) instead of the roofline defaults");
  s->add_flag("--allow-oom", sim.allow_oom, "Simulate even if a rank's peak memory exceeds the GPU's");
  s->add_flag("-q,--quiet", sim.quiet, "Do not print the table");

  CompareOptions cmp;
  auto* c = app.add_subcommand("compare", "Simulate every scheme (and degree choice) that applies to a scenario, ranked");
  c->add_option("scenario", cmp.input, "Scenario JSON file (its scheme and options are one more variant)")->required();
  c->add_option("--json", cmp.json_out, "Write the ranking as JSON to this file");
  c->add_option("--profile", cmp.profile, "Calibrated profile (hardware/profiles/<name>.json) instead of the roofline defaults");

  CalibrateOptions cal;
  auto* ca = app.add_subcommand("calibrate", "Run calibration sweeps on the local GPUs (or fit recorded ones) and write a profile");
  ca->add_option("--out", cal.out, "Profile to write (hardware/profiles/<name>.json)")->required();
  ca->add_option("--hardware", cal.hardware, "Built-in description of this machine (the sweeps are planned for it)");
  ca->add_option("--from-raw", cal.from_raw,
                 "Fit these raw measurements (results/calibration/.../raw.json) instead of running sweeps; repeat it to "
                 "join runs on one GPU model (kernels on one GPU, links on two)");
  ca->add_option("--from-run", cal.from_run,
                 "Like --from-raw DIR/raw.json, with its attention and merge samples re-read from DIR/plans and "
                 "DIR/measured (the run's own plans and per-op medians); repeatable, and joins with --from-raw");
  ca->add_option("--kernel-tiles", cal.kernel_tiles,
                 "Kernel tiles the fit chooses among, QxK[,QxK...] (default 64x64,128x64,64x128,128x128); one tile pins "
                 "it, e.g. where the kernel library states it and the sweeps cannot tell");
  ca->add_option("--residuals", cal.residuals, "Also write the kernel fit's in-sample residuals (CSV, one row per attention op)");
  ca->add_option("--kernel-build", cal.kernel_build,
                 "With --from-run/--from-raw: SHA256[,GIT] of the attention kernels the run measured, for runs recorded "
                 "before raw files carried it (scripts/kernel_build_at.sh <the run's git SHA> prints it)");
  ca->add_option("--raw-dir", cal.raw_dir, "Folder for plans, measured results, logs and raw.json (default results/calibration/<UTC>_<hardware>)");
  ca->add_option("--gpus", cal.gpus, "GPUs to use (default: all visible, up to the node's)");
  ca->add_flag("--quick", cal.quick, "A small sweep grid (a first look, a smoke test)");
  ca->add_option("--sweeps", cal.sweeps, "Sweep groups to run: any of kernel,comm,overlap")->capture_default_str();
  ca->add_option("--warmup", cal.warmup, "Untimed repetitions of each plan")->capture_default_str();
  ca->add_option("--reps", cal.reps, "Timed repetitions of each plan (medians are fitted)")->capture_default_str();

  ValidateOptions val;
  auto* va = app.add_subcommand("validate", "Predicted vs measured for scenarios: run them on GPUs (or read --measured) and report the errors");
  va->add_option("inputs", val.inputs, "Scenario files or folders of them");
  va->add_option("--profile", val.profile, "Calibrated profile to predict with (default: each scenario's, else roofline)");
  va->add_option("--measured", val.measured, "Measured results (`cpsim run --json` files) instead of running on GPUs");
  va->add_option("--out-dir", val.out_dir, "Folder for validation.csv/.json/.png (default results/validation/<UTC>)");
  va->add_option("--plot-script", val.plot_script, "The matplotlib script that draws the PNG");
  va->add_flag("--no-plot", val.no_plot, "Write the CSV and JSON only (a GPU machine without matplotlib); plot them elsewhere");
  va->add_option("--warmup", val.warmup, "Untimed repetitions per scenario (GPU runs)")->capture_default_str();
  va->add_option("--reps", val.reps, "Timed repetitions per scenario (GPU runs)")->capture_default_str();

  backend::RunOptions run;
  auto* rn = add_run_command(app, run);

  EmulateOptions emu;
  auto* em = add_emulate_command(app, emu);

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
    if (em->parsed())
      return cmd_emulate(emu);
    if (ca->parsed())
      return cmd_calibrate(cal);
    if (va->parsed())
      return cmd_validate(val);
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
