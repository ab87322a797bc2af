// Scenario parsing: strict keys, hardware resolved by name or given inline, cross-field checks that
// do not depend on the scheme (the scheme's generator checks its own constraints).
#include "cpsim/model/scenario.hpp"

#include <filesystem>

namespace cpsim {

Scenario scenario_from_json(const Json& j, const HardwareResolver& resolve, const std::string& base_dir) {
  JsonObjectReader r(j, "");
  Scenario s;
  s.source = j;
  s.name = r.get_string_or("name", "scenario");
  {
    const Json& hw = r.raw("hardware");
    if (hw.is_string())
      s.cluster = cluster_from_json(resolve(hw.get<std::string>()), "hardware '" + hw.get<std::string>() + "'");
    else if (hw.is_object())
      s.cluster = cluster_from_json(hw, "hardware");
    else
      r.fail("hardware", "must be the name of a built-in description or an object");
  }
  s.workload = workload_from_json(r.raw("workload"), "workload", base_dir);
  {
    JsonObjectReader p = r.get_object("parallel");
    s.parallel.scheme = p.get_string("scheme");
    s.parallel.cp = static_cast<int>(p.get_int("cp", 1, 1 << 24));
    if (s.parallel.cp > s.cluster.world_size())
      p.fail("cp", "exceeds the " + std::to_string(s.cluster.world_size()) + " GPUs of hardware '" + s.cluster.name + "'");
    s.parallel.dp = static_cast<int>(p.get_int_or("dp", 1, 1, 1 << 24));
    if (int64_t(s.parallel.dp) * s.parallel.cp > s.cluster.world_size())
      p.fail("dp", "dp x cp = " + std::to_string(int64_t(s.parallel.dp) * s.parallel.cp) + " exceeds the " +
                       std::to_string(s.cluster.world_size()) + " GPUs of hardware '" + s.cluster.name + "'");
    const Json& pj = r.raw("parallel");
    for (auto it = pj.begin(); it != pj.end(); ++it)
      if (it.key() != "scheme" && it.key() != "cp" && it.key() != "dp")
        s.parallel.options[it.key()] = it.value();
  }
  s.pass = r.get_enum("pass", {"fwd", "fwd_bwd"}) == "fwd" ? PassKind::FWD : PassKind::FWD_BWD;
  if (r.has("kernel")) {
    JsonObjectReader k = r.get_object("kernel");
    s.tile_m = k.get_int_or("tile_m", 128, 16, 1024);
    s.tile_n = k.get_int_or("tile_n", 128, 16, 1024);
    k.finish();
  }
  if (r.has("profile")) {
    std::filesystem::path pp(r.get_string("profile"));
    if (pp.empty())
      r.fail("profile", "must name a profile file (hardware/profiles/<name>.json)");
    s.profile = (pp.is_relative() && !base_dir.empty() ? std::filesystem::path(base_dir) / pp : pp).lexically_normal().string();
  }
  r.get_string_or("description", "");
  r.finish();
  return s;
}

Json scenario_to_json(const Scenario& s) {
  Json parallel = s.parallel.options;
  parallel["scheme"] = s.parallel.scheme;
  parallel["cp"] = s.parallel.cp;
  parallel["dp"] = s.parallel.dp;
  Json j{{"name", s.name},
         {"hardware", cluster_to_json(s.cluster)},
         {"workload", workload_to_json(s.workload)},
         {"parallel", parallel},
         {"pass", to_string(s.pass)},
         {"kernel", {{"tile_m", s.tile_m}, {"tile_n", s.tile_n}}}};
  if (!s.profile.empty())
    j["profile"] = s.profile;
  return j;
}

} // namespace cpsim
