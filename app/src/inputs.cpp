// Scenario and plan loading for the front end.
#include "inputs.hpp"

#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/model/schedule_json.hpp"

#include <chrono>
#include <filesystem>

namespace cpsim {

std::string git_sha() { return CPSIM_GIT_SHA; }

namespace {
constexpr const char* kPlanFormat = "cpsim-plan";

std::string dir_of(const std::string& path) {
  return std::filesystem::absolute(path).parent_path().string();
}
} // namespace

Scenario load_scenario(const std::string& path) {
  Json j = load_json_file(path);
  if (j.is_object() && j.contains("format"))
    throw UserError("'" + path + "' is a plan, not a scenario");
  return scenario_from_json(j, builtin_hardware, dir_of(path));
}

LoadedInput load_input(const std::string& path) {
  Json j = load_json_file(path);
  LoadedInput in;
  if (j.is_object() && j.contains("format")) {
    JsonObjectReader r(j, "");
    if (r.get_string("format") != kPlanFormat)
      r.fail("format", std::string("a plan file must have format \"") + kPlanFormat + "\"");
    r.get_int("version", 1, 1);
    r.get_string_or("git_sha", "");
    r.raw("source");
    in.planning_time_s = r.get_number_or("planning_time_s", 0.0, 0.0);
    in.scenario = scenario_from_json(r.raw("scenario"), builtin_hardware, dir_of(path));
    in.scenario.source = j.at("source");
    in.schedule = schedule_from_json(r.raw("schedule"), "schedule");
    r.finish();
    if (in.schedule.world != in.scenario.parallel.cp)
      throw UserError("plan: schedule.world = " + std::to_string(in.schedule.world) + " but scenario.parallel.cp = " +
                      std::to_string(in.scenario.parallel.cp));
    for (int g0 : in.schedule.placement)
      for (int g = g0, k = 0; k < in.schedule.replicas; ++k, g += in.schedule.replica_stride)
        if (g < 0 || g >= in.scenario.cluster.world_size())
        throw UserError("plan: placement names GPU " + std::to_string(g) + ", outside the " +
                        std::to_string(in.scenario.cluster.world_size()) + " GPUs of the hardware");
    in.from_plan = true;
    return in;
  }
  in.scenario = scenario_from_json(j, builtin_hardware, dir_of(path));
  auto t0 = std::chrono::steady_clock::now();
  in.schedule = generate_schedule(in.scenario);
  in.planning_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return in;
}

Json plan_to_json(const LoadedInput& in) {
  return Json{{"format", kPlanFormat},
              {"version", 1},
              {"git_sha", git_sha()},
              {"planning_time_s", in.planning_time_s},
              {"source", in.scenario.source},
              {"scenario", scenario_to_json(in.scenario)},
              {"schedule", schedule_to_json(in.schedule)}};
}

} // namespace cpsim
