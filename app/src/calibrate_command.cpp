// `cpsim calibrate` (see calibrate_command.hpp). Each sweep plan is written as a plan file and run
// by `cpsim run` in a child process, exactly as a user would run it; a plan the backend cannot
// execute (make_exec_plan refuses it) or a run that fails is recorded in the profile's
// not_calibrated list rather than hidden.
#include "calibrate_command.hpp"

#include "child_process.hpp"
#include "gpu_probe.hpp"
#include "inputs.hpp"

#include "cpsim/calibrate/fit.hpp"
#include "cpsim/calibrate/sweeps.hpp"
#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

namespace cpsim {

namespace {
namespace fs = std::filesystem;

void progress(size_t done, size_t total, const std::string& what) {
  const int width = 30;
  int filled = total ? int(double(done) / double(total) * width) : width;
  std::fprintf(stderr, "\r[%s%s] %3zu/%zu %-48.48s", std::string(size_t(filled), '#').c_str(),
               std::string(size_t(width - filled), '.').c_str(), done, total, what.c_str());
  if (done == total)
    std::fputc('\n', stderr);
  std::fflush(stderr);
}

void print_profile(const calib::Profile& p) {
  std::printf("profile %s: %s, %d SMs, %d GPU(s), hardware %s, %s, git %s\n", p.name.c_str(), p.gpu_name.c_str(),
              p.sm_count, p.gpus, p.hardware.c_str(), p.date_utc.c_str(), p.git_sha.c_str());
  std::printf("  %s\n", describe(p.kernel_build).c_str());
  for (const auto& k : p.kernels) {
    std::printf("  attention %s d=%-3d tile %lldx%lld  launch %.2f us  lone CTA x%.2f  hbm %.0f GB/s (%s)  in-sample "
                "|err| median %.1f%% p95 %.1f%% (n=%d)\n",
                to_string(k.dir).c_str(), k.head_dim, (long long)k.tile.q, (long long)k.tile.k, k.launch_s * 1e6,
                k.alone_fraction, k.hbm_bytes_per_s / 1e9, k.hbm_source.c_str(), 100 * k.quality.median_abs_rel_err,
                100 * k.quality.p95_abs_rel_err, k.quality.samples);
    if (k.candidates.size() > 1) {
      std::printf("    candidates (selection loss):");
      for (size_t i = 0; i < k.candidates.size() && i < 4; ++i) {
        std::string grids;
        for (GridKind g : k.candidates[i].grids)
          grids += (grids.empty() ? "" : "+") + to_string(g);
        std::printf(" %lldx%lld %s %.4g;", (long long)k.candidates[i].tile.q, (long long)k.candidates[i].tile.k,
                    grids.c_str(), k.candidates[i].loss);
      }
      std::printf("\n");
    }
    for (const auto& g : k.grids)
      std::printf("    grid %-13s %d CTA/SM  cta %.3f us  head %.3f us  tile %.3f us  partial %.3f + %.3f x visible us\n",
                  to_string(g.kind).c_str(), g.ctas_per_sm, g.cta_s * 1e6, g.head_s * 1e6, g.tile_full_s * 1e6,
                  g.tile_partial_s * 1e6, g.partial_visible_s * 1e6);
  }
  for (const auto& m : p.merges)
    std::printf("  merge %s  launch %.2f us  %.0f GB/s  bytes %.3g..%.3g  in-sample |err| median %.1f%% p95 %.1f%% "
                "(n=%d)\n",
                to_string(m.dir).c_str(), m.launch_s * 1e6, m.bytes_per_s / 1e9, m.bytes.min, m.bytes.max,
                100 * m.quality.median_abs_rel_err, 100 * m.quality.p95_abs_rel_err, m.quality.samples);
  for (const auto& c : p.comms) {
    std::printf("  %-14s %-10s latency %.2f us  bandwidth %.1f GB/s  bytes %.3g..%.3g  in-sample |err| median "
                "%.1f%% p95 %.1f%% (n=%d)",
                c.op.c_str(), c.link.c_str(), c.latency_s * 1e6, c.bandwidth_bytes_per_s / 1e9, c.bytes.min,
                c.bytes.max, 100 * c.quality.median_abs_rel_err, 100 * c.quality.p95_abs_rel_err, c.quality.samples);
    // the per-size correction makes the in-sample error ~0 by construction; the line alone shows the model's fit
    if (c.line_quality.samples > 0)
      std::printf("; latency+bandwidth line alone median %.1f%% p95 %.1f%%", 100 * c.line_quality.median_abs_rel_err,
                  100 * c.line_quality.p95_abs_rel_err);
    std::printf("\n");
  }
  if (p.has_overlap)
    std::printf("  overlap: attention x%.3f beside NCCL traffic, traffic x%.3f beside attention (n=%d)\n",
                p.overlap.compute_slowdown, p.overlap.comm_slowdown, p.overlap.samples);
  for (const auto& n : p.not_calibrated)
    std::printf("  not calibrated: %s\n", n.c_str());
}

calib::RawMeasurements run_sweeps(const CalibrateOptions& o, const ClusterSpec& c, int gpus, const std::string& dir) {
  calib::RawMeasurements raw;
  raw.hardware = o.hardware;
  raw.hardware_gpu = c.gpu.name;
  raw.gpus = gpus;
  raw.date_utc = utc_date_time();
  raw.git_sha = git_sha();
  raw.kernel_build = kernels_that_run(); // the child `cpsim run`s are this binary, in this environment: its kernels ran
  calib::SweepOptions so;
  so.gpus = gpus;
  so.quick = o.quick;
  calib::select_sweeps(so, o.sweeps);
  const auto plans = calib::calibration_plans(c, so);
  raw.tile_m = plans.empty() ? 128 : plans.front().schedule.tile_m;
  raw.tile_n = plans.empty() ? 128 : plans.front().schedule.tile_n;
  if (gpus < 2)
    raw.not_calibrated.push_back("communication and overlap: one GPU only");
  for (const auto& [on, group] : {std::pair{so.kernel, "kernel"}, {so.comm, "comm"}, {so.overlap, "overlap"}})
    if (!on)
      raw.not_calibrated.push_back(std::string(group) + ": not selected (--sweeps " + o.sweeps + ")");
  raw.not_calibrated.push_back("inter_node links: calibrate runs on the GPUs of one node");
  fs::create_directories(dir + "/plans");
  fs::create_directories(dir + "/measured");
  fs::create_directories(dir + "/logs");
  const std::string exe = self_exe();
  // failures are summarised per sweep: one line saying how many plans of it failed and why the first did
  std::map<std::string, std::pair<int, std::string>> failed;
  std::map<std::string, int> planned;
  for (size_t i = 0; i < plans.size(); ++i) {
    const auto& p = plans[i];
    progress(i, plans.size(), p.name);
    ++planned[p.sweep];
    auto fail = [&](const std::string& why) {
      auto& f = failed[p.sweep];
      if (f.first++ == 0)
        f.second = "plan " + p.name + ": " + why;
    };
    try {
      backend::make_exec_plan(p.schedule, p.scenario.workload);
    } catch (const UserError& e) {
      fail(std::string("the backend cannot execute it: ") + e.what());
      continue;
    }
    const std::string plan_file = dir + "/plans/" + p.name + ".json", out = dir + "/measured/" + p.name + ".json";
    const std::string log = dir + "/logs/" + p.name + ".log";
    LoadedInput in;
    in.scenario = p.scenario;
    in.scenario.source = scenario_to_json(p.scenario);
    in.schedule = p.schedule;
    save_json_file(plan_file, plan_to_json(in), -1);
    int rc = run_child({exe, "run", plan_file, "--json", out, "--warmup", std::to_string(o.warmup), "--reps",
                        std::to_string(o.reps), "--profile-reps", "0", "-q"},
                       log);
    if (rc != 0) {
      fail("cpsim run exited with code " + std::to_string(rc) + " (log " + log + ")");
      continue;
    }
    Json m = load_json_file(out);
    if (raw.gpu_name.empty() && m.contains("devices") && !m["devices"].empty()) {
      raw.gpu_name = m["devices"][0].value("name", std::string());
      raw.sm_count = m["devices"][0].value("sm_count", 0);
    }
    calib::add_samples(p, m, raw);
  }
  for (const auto& [sweep, f] : failed)
    raw.not_calibrated.push_back(sweep + ": " + std::to_string(f.first) + " of " + std::to_string(planned[sweep]) +
                                 " plans did not run; first: " + f.second);
  progress(plans.size(), plans.size(), "done");
  if (raw.gpu_name.empty() || raw.sm_count <= 0)
    throw UserError("no calibration plan ran (see " + dir + "/logs/): nothing was measured");
  return raw;
}
/** The op of a recorded plan and the op this build generates for the same scenario agree on what was measured. */
bool same_work(const Op& a, const Op& b) {
  return a.kind == b.kind && a.label == b.label && a.dir == b.dir && a.head_begin == b.head_begin &&
         a.head_end == b.head_end && a.segments == b.segments && a.rows == b.rows && a.inputs == b.inputs &&
         a.reads == b.reads && a.writes == b.writes;
}

/**
 * A committed run folder's measurements with its attention and merge samples rebuilt from the plans it ran and
 * their measured per-op medians: runs recorded before merge samples existed get them, and a change of the
 * features is applied to old measurements. Each plan is generated again from its scenario with this build's
 * generators and every recorded op takes the IR bytes of the op generated in its place, so a corrected byte count
 * (backward merges, 2026-12-07) reaches old measurements. The generated op must do the same work (kind, label,
 * heads, segments, buffers), else the run is refused; ops generated beyond the recorded ones (added since) were not
 * measured and are left out. Only the kernel-sweep plans whose samples raw.json holds are read.
 */
calib::RawMeasurements raw_from_run(const std::string& dir) {
  calib::RawMeasurements raw;
  std::vector<std::string> plans;
  {
    // the header and link samples of raw.json; attention samples come from the plans whatever its version
    Json j = load_json_file(dir + "/raw.json");
    if (j.is_object() && j.contains("kernel_samples") && j["kernel_samples"].is_array()) {
      for (const auto& k : j["kernel_samples"])
        if (k.is_object() && k.contains("plan") && k["plan"].is_string() &&
            std::find(plans.begin(), plans.end(), k["plan"].get<std::string>()) == plans.end())
          plans.push_back(k["plan"].get<std::string>());
      j["kernel_samples"] = Json::array();
    }
    raw = calib::raw_from_json(j, "raw measurements '" + dir + "/raw.json'");
  }
  calib::RawMeasurements rebuilt;
  for (const auto& name : plans) {
    const std::string plan_file = dir + "/plans/" + name + ".json", measured = dir + "/measured/" + name + ".json";
    for (const auto& f : {plan_file, measured})
      if (!fs::exists(f))
        throw UserError("--from-run " + dir + ": raw.json has samples of plan '" + name + "' but " + f + " is missing");
    const LoadedInput in = load_input(plan_file);
    calib::CalibrationPlan p;
    p.name = name;
    p.sweep = "kernel";
    p.scenario = in.scenario;
    p.schedule = in.schedule;
    const Schedule now = generate_schedule(in.scenario);
    auto& then = p.schedule.ranks.at(0).ops;
    const auto& gen = now.ranks.at(0).ops;
    for (size_t i = 0; i < then.size(); ++i) {
      if (i >= gen.size() || !same_work(gen[i], then[i]))
        throw UserError("--from-run " + dir + ": plan '" + name + "', op " + std::to_string(i) + " ('" + then[i].label +
                        "'): this build generates other work in its place, so its measurement cannot be paired");
      then[i].bytes = gen[i].bytes;
    }
    calib::add_kernel_probes(p);
    const Json mj = load_json_file(measured);
    if (mj.contains("loopback"))
      throw UserError("--from-run " + dir + ": " + measured + " is a `cpsim run --loopback` result, whose ranks time-shared "
                      "one GPU: its times are not the plan's");
    calib::add_samples(p, mj, rebuilt);
  }
  raw.kernels = rebuilt.kernels;
  raw.merges = rebuilt.merges;
  return raw;
}

/** "SHA256[,GIT[,IMPLEMENTATION]]" (scripts/kernel_build_at.sh) -> KernelBuild; UserError naming the option otherwise. */
calib::KernelBuild parse_kernel_build(const std::string& v) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t comma = v.find(',', start);
    parts.push_back(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  parts.resize(std::max<size_t>(parts.size(), 3));
  const calib::KernelBuild b{parts[0], parts[1], parts[2]};
  if (parts.size() > 3 || b.source_sha256.size() != 64 ||
      b.source_sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw UserError("--kernel-build = \"" + v + "\": expected SHA256[,GIT[,IMPLEMENTATION]] with 64 lower-case hex "
                    "digits (scripts/kernel_build_at.sh <commit> prints the first two)");
  return b;
}
/** In-sample residuals of the kernel fit, one row per measured attention op, with provenance lines. */
void write_residuals(const CalibrateOptions& o, const calib::Profile& p, const calib::RawMeasurements& raw) {
  std::FILE* f = std::fopen(o.residuals.c_str(), "w");
  if (!f)
    throw UserError("--residuals " + o.residuals + ": cannot write the file");
  std::fprintf(f, "# in-sample residuals of the kernel fit of profile %s (git %s; measurements %s, git %s; %s)\n",
               o.out.c_str(), git_sha().c_str(), p.raw_file.c_str(), raw.git_sha.c_str(),
               describe(p.kernel_build).c_str());
  std::fprintf(f, "plan,direction,head_dim,mask,seq,heads,kv_heads,measured_s,predicted_s,rel_err\n");
  for (const auto& r : calib::kernel_residuals(p.kernels, raw.kernels, raw.sm_count)) {
    const calib::KernelSample& s = *r.sample;
    std::fprintf(f, "%s,%s,%d,%s,%lld,%d,%d,%.6e,%.6e,%+.4f\n", s.plan.c_str(), to_string(s.op.dir).c_str(),
                 s.workload.head_dim, s.mask.c_str(), (long long)s.workload.seq_lens.front(), s.workload.heads,
                 s.workload.kv_heads, s.measured_s, r.predicted_s, r.predicted_s / s.measured_s - 1);
  }
  std::fclose(f);
  std::printf("wrote %s\n", o.residuals.c_str());
}
} // namespace

int cmd_calibrate(const CalibrateOptions& o) {
  if (o.out.empty())
    throw UserError("--out: the profile file to write is required (hardware/profiles/<name>.json)");
  calib::RawMeasurements raw;
  std::string raw_file;
  if (!o.from_raw.empty() || !o.from_run.empty()) {
    std::vector<calib::RawMeasurements> runs;
    std::vector<std::string> names;
    for (const auto& d : o.from_run) {
      runs.push_back(raw_from_run(d));
      names.push_back(d);
      raw_file += (raw_file.empty() ? "" : " + ") + d + "/raw.json (samples from its plans)";
    }
    for (const auto& f : o.from_raw) {
      runs.push_back(calib::load_raw(f));
      names.push_back(f);
      raw_file += (raw_file.empty() ? "" : " + ") + f;
    }
    raw = calib::merge_raw(runs, names);
    if (!o.kernel_build.empty()) {
      const calib::KernelBuild b = parse_kernel_build(o.kernel_build);
      if (raw.kernel_build.known() && !raw.kernel_build.same_kernels(b))
        throw UserError("--kernel-build = \"" + o.kernel_build + "\": the raw measurements record " +
                        describe(raw.kernel_build) + " (the option is for runs recorded before raw files carried it)");
      raw.kernel_build = b;
    }
  } else {
    if (!o.kernel_build.empty())
      throw UserError("--kernel-build: only with --from-raw or --from-run (a GPU sweep records this build's kernels)");
    calib::SweepOptions check;
    calib::select_sweeps(check, o.sweeps); // a bad list is the user's error whatever the machine
    require_gpus("calibrate", "use --from-raw FILE to fit measurements recorded on a GPU machine");
    if (o.hardware.empty())
      throw UserError("--hardware: name the built-in description of this machine (cpsim hardware lists them), "
                      "so the sweeps are planned for its GPUs");
    ClusterSpec c = cluster_from_json(builtin_hardware(o.hardware), o.hardware);
    const int visible = probe_gpus().devices;
    int gpus = std::min(visible, c.gpus_per_node);
    if (o.gpus > 0) {
      if (o.gpus > gpus)
        throw UserError("--gpus = " + std::to_string(o.gpus) + ": only " + std::to_string(gpus) +
                        " GPUs are visible on this node of '" + o.hardware + "'");
      gpus = o.gpus;
    }
    const std::string dir = o.raw_dir.empty() ? "results/calibration/" + utc_stamp() + "_" + o.hardware : o.raw_dir;
    raw = run_sweeps(o, c, gpus, dir);
    raw_file = dir + "/raw.json";
    save_json_file(raw_file, calib::raw_to_json(raw), 1);
    std::printf("raw measurements: %s\n", raw_file.c_str());
  }
  const std::string hw = o.hardware.empty() ? raw.hardware : o.hardware;
  const ClusterSpec c = cluster_from_json(builtin_hardware(hw), hw);
  calib::KernelFitOptions ko;
  if (!o.kernel_tiles.empty())
    ko.tiles = calib::parse_kernel_tiles(o.kernel_tiles, "--kernel-tiles");
  calib::Profile p = calib::fit_profile(raw, c.gpu.hbm_bytes_per_s, ko);
  p.name = fs::path(o.out).stem().string();
  p.source = o.from_raw.empty() && o.from_run.empty() ? "gpu sweep" : "from raw " + raw_file;
  p.raw_file = raw_file;
  save_json_file(o.out, calib::profile_to_json(p), 2);
  print_profile(p);
  if (!o.residuals.empty())
    write_residuals(o, p, raw);
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

} // namespace cpsim
