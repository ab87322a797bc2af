// The committed validation grids (scenarios/validation/<gpu>x<N>/, scripts/gen_validation_scenarios.sh)
// are run on lent machines whose time is short: a scenario the backend refuses or that does not fit
// the GPU would end `cpsim validate` mid-grid. This checks here, on CPUs, what the device run would
// hit first: every top-level scenario builds an exec plan that fits, and every sim_only/ one is still
// refused (once the backend runs one, it belongs in the grid proper).
#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <regex>

using namespace cpsim;
using namespace cpsim::backend;
namespace fs = std::filesystem;

namespace {
const fs::path kGrids = fs::path(CPSIM_SOURCE_DIR) / "scenarios" / "validation";

std::vector<fs::path> json_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".json")
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> grid_dirs() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(kGrids))
    if (e.is_directory())
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

Scenario load(const fs::path& f) { return scenario_from_json(load_json_file(f.string()), builtin_hardware, f.parent_path().string()); }
} // namespace

TEST_CASE("validation grids: folder h100x4 holds scenarios for hardware h100-sxm-4, and every one builds an exec plan that fits") {
  const std::regex grid_name(R"((h100|h200)x([248]))");
  const auto dirs = grid_dirs();
  REQUIRE(dirs.size() >= 6); // h100 and h200, 2, 4 and 8 GPUs
  for (const auto& dir : dirs) {
    std::smatch m;
    const std::string name = dir.filename().string();
    INFO("folder " << name);
    REQUIRE(std::regex_match(name, m, grid_name));
    const std::string hardware = m[1].str() + "-sxm-" + m[2].str();
    const auto files = json_files(dir);
    CHECK(files.size() >= 30);
    for (const auto& f : files) {
      INFO("scenario " << f.filename().string());
      Json j = load_json_file(f.string());
      CHECK(j.at("hardware").get<std::string>() == hardware);
      Scenario sc = load(f);
      ExecPlan plan;
      REQUIRE_NOTHROW(plan = make_exec_plan(generate_schedule(sc), sc.workload));
      // a tenth of the GPU stays for the CUDA context, NCCL's buffers and the kernels' workspace
      for (const auto& rp : plan.ranks)
        CHECK(double(rp.arena_bytes + rp.staging_bytes) <= 0.9 * sc.cluster.gpu.memory_bytes);
    }
  }
}

TEST_CASE("validation grids: the sim_only scenarios build exec plans (held back from the measured grid until checked on GPUs)") {
  int checked = 0;
  for (const auto& dir : grid_dirs()) {
    const fs::path sim = dir / "sim_only";
    REQUIRE(fs::is_directory(sim));
    CHECK(fs::is_regular_file(sim / "README.md"));
    for (const auto& f : json_files(sim)) {
      // the plan's structure depends on the scheme, not the length: the shortest sequence keeps planning quick
      if (f.filename().string().find("_32k") == std::string::npos)
        continue;
      INFO("scenario " << dir.filename().string() << "/sim_only/" << f.filename().string());
      Scenario sc = load(f);
      Schedule s = generate_schedule(sc);
      const std::string scheme = f.filename().string().substr(0, f.filename().string().find('_'));
      REQUIRE((scheme == "cqs" || scheme == "dsv"));
      CHECK_NOTHROW(make_exec_plan(s, sc.workload));
      ++checked;
    }
  }
  CHECK(checked == 6 * 2 + 4 * 3); // DSV HCP and SCP everywhere; hybrid DSV and CQS causal, full on 4 and 8 GPUs
}
