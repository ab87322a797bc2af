// `cpsim emulate`; see emulate_command.hpp.
#include "emulate_command.hpp"

#include "inputs.hpp"

#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/mask_geometry.hpp"
#include "cpsim/model/scenario_shrink.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#if CPSIM_HAVE_EMULATOR
#include "plan_emulator.hpp"
#endif

namespace cpsim {

namespace {
constexpr double kRelTolerance = 1e-9; // fp64 against fp64: what differs beyond rounding is a wrong cell or row
}

CLI::App* add_emulate_command(CLI::App& app, EmulateOptions& o) {
  auto* e = app.add_subcommand("emulate", "Run the plan on the CPU in fp64 (every rank, every op) and compare its results "
                                          "with attention: a plan's --check without GPUs");
  e->add_option("input", o.input, "Scenario JSON or plan JSON (from 'cpsim plan')")->required();
  e->add_option("--json", o.json_out, "Write the comparison (one row per rank and result) as JSON to this file");
  e->add_option("--value-dims", o.value_dims, "Head elements that carry values (the rest are 0): fewer is faster")
      ->capture_default_str();
  e->add_option("--shrink", o.shrink,
                 "Divide the scenario's sequence lengths, mask spans and DCP block by this first: the same plan "
                 "structure over shorter sequences (scenarios only)")
      ->capture_default_str();
  e->add_option("--max-cells", o.max_cells, "Refuse workloads whose fp64 reference takes more (query, key, head) cells")
      ->capture_default_str();
  e->add_flag("-q,--quiet", o.quiet, "Do not print the table");
  return e;
}

int cmd_emulate(const EmulateOptions& o) {
  if (o.value_dims < 1)
    throw UserError("--value-dims " + std::to_string(o.value_dims) + ": must be at least 1");
  if (o.shrink < 1)
    throw UserError("--shrink " + std::to_string(o.shrink) + ": must be at least 1");
  if (!(o.max_cells > 0))
    throw UserError("--max-cells: must be positive");
#if CPSIM_HAVE_EMULATOR
  LoadedInput in;
  if (o.shrink != 1) {
    const Json j = load_json_file(o.input);
    if (j.is_object() && j.contains("format"))
      throw UserError("--shrink " + std::to_string(o.shrink) + ": '" + o.input + "' is a plan, whose schedule is fixed; "
                      "shrink its scenario instead");
    in.scenario = scenario_from_json(shrink_scenario_json(j, o.shrink), builtin_hardware,
                                     std::filesystem::absolute(o.input).parent_path().string());
    in.schedule = generate_schedule(in.scenario);
  } else {
    in = load_input(o.input);
  }
  const Workload& w = in.scenario.workload;
  const MaskGeometry mask(w);
  double cells = 0;
  for (size_t s = 0; s < w.seq_lens.size(); ++s)
    cells += double(mask.cells(int(s), {0, w.seq_lens[s]}, {0, w.seq_lens[s]})) * w.heads;
  if (cells > o.max_cells)
    throw UserError("'" + o.input + "': the fp64 reference would compute " + std::to_string(int64_t(cells)) +
                    " (query, key, head) cells, over --max-cells " + std::to_string(int64_t(o.max_cells)) +
                    "; emulate shorter sequences (--shrink N: the plan's structure is the same) or raise --max-cells");
  const backend::ExecPlan plan = backend::make_exec_plan(in.schedule, w);
  backend::EmulationOptions eo;
  eo.value_dims = std::min(o.value_dims, w.head_dim);
  const std::vector<backend::EmulatedResult> res = backend::emulate_plan(in.schedule, in.scenario, plan, eo);
  bool ok = true;
  Json rows = Json::array();
  if (!o.quiet)
    std::printf("emulated %s (%s) on %zu ranks in fp64, %d value elements per head\n%-5s %-4s %-16s %10s %12s %12s  %s\n",
                in.schedule.scheme.c_str(), in.schedule.pass == PassKind::FWD_BWD ? "fwd_bwd" : "fwd", plan.ranks.size(),
                eo.value_dims, "rank", "res", "buffer", "elements", "max|err|", "max|ref|", "ok");
  for (const auto& r : res) {
    const bool good = r.max_abs_err <= kRelTolerance * std::max(1.0, r.max_abs_ref) && r.elements > 0;
    ok = ok && good;
    if (!o.quiet)
      std::printf("%-5d %-4s %-16s %10lld %12.3g %12.3g  %s\n", r.rank, r.result.c_str(), r.buffer.c_str(),
                  static_cast<long long>(r.elements), r.max_abs_err, r.max_abs_ref,
                  good ? "yes" : ("NO, worst at " + r.worst).c_str());
    rows.push_back(Json{{"rank", r.rank}, {"result", r.result}, {"buffer", r.buffer}, {"elements", r.elements},
                        {"max_abs_err", r.max_abs_err}, {"max_abs_ref", r.max_abs_ref}, {"ok", good}, {"worst", r.worst}});
  }
  if (res.empty()) {
    ok = false;
    std::fprintf(stderr, "cpsim: error: the plan has no result buffers to compare\n");
  }
  if (!o.json_out.empty()) {
    std::ofstream f(o.json_out);
    if (!f)
      throw UserError("--json '" + o.json_out + "': cannot be written");
    f << Json{{"input", o.input}, {"git_sha", git_sha()}, {"scheme", in.schedule.scheme}, {"value_dims", eo.value_dims},
              {"shrink", o.shrink},
              {"tolerance_rel", kRelTolerance}, {"ok", ok}, {"results", rows}}.dump(2)
      << "\n";
  }
  if (!o.quiet)
    std::printf("%s\n", ok ? "every result equals attention's to fp64 rounding" : "MISMATCH: see the rows marked NO");
  return ok ? 0 : 1;
#else
  std::fprintf(stderr, "cpsim: error: 'cpsim emulate' needs the kernels' planner, and this cpsim was built without "
                       "CUDA (-DCPSIM_WITH_CUDA=ON with nvcc present)\n");
  return 2;
#endif
}

} // namespace cpsim
