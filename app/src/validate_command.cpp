// `cpsim validate` (see validate_command.hpp). Measured files are paired with scenarios by the
// scenario name recorded in them; with no scenario arguments the scenarios come from the files.
#include "validate_command.hpp"

#include "child_process.hpp"
#include "gpu_probe.hpp"
#include "inputs.hpp"

#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/calibrate/predict.hpp"
#include "cpsim/calibrate/validation.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/model/schedule_json.hpp"
#include "cpsim/simulator/analytic_engine.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

namespace cpsim {

namespace {
namespace fs = std::filesystem;

std::vector<std::string> scenario_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    if (fs::is_directory(in)) {
      std::vector<std::string> here;
      for (const auto& e : fs::directory_iterator(in))
        if (e.is_regular_file() && e.path().extension() == ".json")
          here.push_back(e.path().string());
      if (here.empty())
        throw UserError("'" + in + "': a folder with no .json scenario files");
      std::sort(here.begin(), here.end());
      files.insert(files.end(), here.begin(), here.end());
    } else {
      files.push_back(in);
    }
  }
  return files;
}

struct Case {
  Scenario scenario;
  std::string measured_path;
  Json measured;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f)
    throw UserError("cannot write '" + path + "'");
}
} // namespace

int cmd_validate(const ValidateOptions& o) {
  std::vector<Case> cases;
  const std::string out_dir = o.out_dir.empty() ? "results/validation/" + utc_stamp() : o.out_dir;
  if (!o.measured.empty()) {
    std::map<std::string, std::pair<std::string, Json>> by_name;
    for (const auto& m : o.measured) {
      Json j = load_json_file(m);
      if (!j.is_object() || !j.contains("scenario") || !j["scenario"].is_object())
        throw UserError("--measured '" + m + "': no \"scenario\" object (is it `cpsim run --json` output?)");
      if (j.contains("loopback"))
        throw UserError("--measured '" + m + "': a `cpsim run --loopback` result, whose ranks time-shared one GPU: its "
                        "times are not the plan's");
      std::string name = j["scenario"].value("name", std::string("scenario"));
      if (by_name.count(name))
        throw UserError("--measured: '" + by_name[name].first + "' and '" + m + "' both measure scenario '" + name +
                        "'; give each scenario a distinct name");
      by_name[name] = {m, std::move(j)};
    }
    if (o.inputs.empty()) {
      for (auto& [name, mj] : by_name)
        cases.push_back(
            {scenario_from_json(mj.second["scenario"], builtin_hardware, fs::path(mj.first).parent_path().string()),
             mj.first, mj.second});
    } else {
      for (const auto& f : scenario_files(o.inputs)) {
        Scenario sc = load_scenario(f);
        auto it = by_name.find(sc.name);
        if (it == by_name.end())
          throw UserError("scenario '" + f + "' (name '" + sc.name + "'): no --measured file measures it");
        cases.push_back({sc, it->second.first, it->second.second});
      }
    }
  } else {
    if (o.inputs.empty())
      throw UserError("validate: give scenario files or folders (or --measured files)");
    require_gpus("validate", "pass the measured results with --measured FILE... to validate without GPUs");
    fs::create_directories(out_dir + "/measured");
    fs::create_directories(out_dir + "/logs");
    fs::create_directories(out_dir + "/plans");
    const auto files = scenario_files(o.inputs);
    for (size_t i = 0; i < files.size(); ++i) {
      LoadedInput in = load_input(files[i]);
      std::fprintf(stderr, "[%zu/%zu] running %s on the GPUs\n", i + 1, files.size(), files[i].c_str());
      const std::string stem = fs::path(files[i]).stem().string();
      const std::string out = out_dir + "/measured/" + stem + ".json", log = out_dir + "/logs/" + stem + ".log";
      // the plan is written once and run as written, so the measured file can carry exactly the plan that ran
      const std::string plan = out_dir + "/plans/" + stem + ".json";
      save_json_file(plan, plan_to_json(in), -1);
      int rc = run_child({self_exe(), "run", plan, "--json", out, "--warmup", std::to_string(o.warmup), "--reps",
                          std::to_string(o.reps), "--profile-reps", "0", "-q"},
                         log);
      if (rc != 0)
        throw UserError("validate: 'cpsim run " + files[i] + "' exited with code " + std::to_string(rc) +
                        " (log: " + log + ")");
      Json m = load_json_file(out);
      m["schedule"] = schedule_to_json(in.schedule);
      m["kernel_build"] = calib::kernel_build_json(kernels_that_run());
      save_json_file(out, m, 1);
      fs::remove(plan);
      cases.push_back({in.scenario, out, m});
    }
    fs::remove(out_dir + "/plans");
  }

  calib::ValidationReport rep;
  for (const auto& c : cases) {
    // the plan that ran, where the measured file carries it (validate writes it since 2026-12-07): its ops pair
    // with the measured ones exactly whatever the generators do today; older files are paired with today's plan
    const bool stored = c.measured.is_object() && c.measured.contains("schedule");
    Schedule s = stored ? schedule_from_json(c.measured.at("schedule"), c.measured_path + ": schedule")
                        : generate_schedule(c.scenario);
    calib::CostModels models = calib::make_cost_models(o.profile.empty() ? c.scenario.profile : o.profile,
                                                       c.scenario.cluster, c.scenario.workload, s);
    if (models.profile && c.measured.is_object() && c.measured.contains("kernel_build")) {
      JsonObjectReader r(c.measured, c.measured_path);
      const calib::KernelBuild ran = calib::read_kernel_build(r, "kernel_build");
      if (!models.profile->kernel_build.same_kernels(ran))
        models.notes->note("measured with " + calib::describe(ran) + ", the profile describes " +
                           calib::describe(models.profile->kernel_build));
    }
    SimResult r = calib::predict(s, c.scenario.workload, models);
    calib::add_scenario(rep, c.scenario.name, s, r, c.measured, c.measured_path);
    for (const auto& n : models.notes->lines())
      rep.notes.push_back(c.scenario.name + ": " + n);
  }

  std::printf("cost model: %s\n",
              o.profile.empty() ? "scenario's profile or roofline" : ("profile " + o.profile).c_str());
  std::fputs(calib::validation_table(rep).c_str(), stdout);
  fs::create_directories(out_dir);
  const std::string csv = out_dir + "/validation.csv", png = out_dir + "/validation.png";
  write_text(csv, calib::validation_csv(rep));
  Json j = calib::validation_json(rep);
  j["git_sha"] = git_sha();
  j["date_utc"] = utc_date_time();
  j["profile"] = o.profile.empty() ? Json(nullptr) : Json(o.profile);
  save_json_file(out_dir + "/validation.json", j, 2);
  std::printf("wrote %s and %s/validation.json\n", csv.c_str(), out_dir.c_str());

  if (o.no_plot) {
    std::printf("no PNG (--no-plot): draw it from the CSV with scripts/plot_validation.py %s validation.png\n", csv.c_str());
    return 0;
  }
  const std::string script =
      o.plot_script.empty() ? std::string(CPSIM_SOURCE_DIR) + "/scripts/plot_validation.py" : o.plot_script;
  if (!fs::exists(script))
    throw UserError("--plot-script = \"" + script + "\": no such file (the PNG is drawn by it; the CSV was written)");
  // matplotlib is a Debian package: the system interpreter has it even where another python3 comes first in PATH
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  int rc = run_child({python, script, csv, png}, out_dir + "/plot.log");
  if (rc != 0)
    throw UserError("the plot script failed with code " + std::to_string(rc) + " (log: " + out_dir +
                    "/plot.log); the CSV and JSON were written (--no-plot skips the PNG where matplotlib is missing)");
  std::printf("wrote %s\n", png.c_str());
  return 0;
}

} // namespace cpsim
