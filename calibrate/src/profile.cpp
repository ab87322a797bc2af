// Profile JSON: writing and strict reading (see profile.hpp). Every number the models divide by or
// multiply with is range-checked here, so a hand-edited profile cannot produce a silent nonsense.
#include "cpsim/calibrate/profile.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cpsim::calib {

void Range::extend(double x) {
  if (empty()) {
    min = max = x;
    return;
  }
  min = std::min(min, x);
  max = std::max(max, x);
}

Direction read_direction(JsonObjectReader& r) {
  return r.get_enum("direction", {"fwd", "bwd"}) == "fwd" ? Direction::FORWARD : Direction::BACKWARD;
}

std::string link_name(bool same_node) {
  return same_node ? "intra_node" : "inter_node";
}

std::string comm_op_name(OpKind kind, CollectiveKind coll) {
  if (kind == OpKind::SEND || kind == OpKind::RECV)
    return "p2p";
  return to_string(coll);
}

Json kernel_build_json(const KernelBuild& b) {
  return {{"source_sha256", b.source_sha256}, {"git_sha", b.git_sha}, {"implementation", b.implementation}};
}

KernelBuild read_kernel_build(JsonObjectReader& parent, const std::string& key) {
  JsonObjectReader r = parent.get_object(key);
  KernelBuild b;
  b.source_sha256 = r.get_string("source_sha256");
  b.git_sha = r.get_string("git_sha");
  b.implementation = r.get_string("implementation");
  if (!b.source_sha256.empty() &&
      (b.source_sha256.size() != 64 || b.source_sha256.find_first_not_of("0123456789abcdef") != std::string::npos))
    r.fail("source_sha256", "must be 64 lower-case hex digits, or empty when unknown");
  r.finish();
  return b;
}

std::string describe(const KernelBuild& b) {
  if (!b.known())
    return "kernels of unknown sources";
  std::string extra = b.git_sha.empty() ? "" : "git " + b.git_sha;
  if (!b.implementation.empty())
    extra += (extra.empty() ? "" : ", ") + b.implementation;
  return "kernels " + b.source_sha256.substr(0, 12) + (extra.empty() ? "" : " (" + extra + ")");
}

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

Json range_json(const Range& r) {
  return Json::array({r.min, r.max});
}
Json quality_json(const FitQuality& q) {
  return {{"samples", q.samples}, {"median_abs_rel_err", q.median_abs_rel_err}, {"p95_abs_rel_err", q.p95_abs_rel_err}};
}

Range read_range(JsonObjectReader& r, const std::string& key, double lo) {
  const Json& v = r.raw(key);
  if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
    r.fail(key, "must be [min, max] (two numbers)");
  Range out{v[0].get<double>(), v[1].get<double>()};
  if (!(out.min >= lo) || !(out.max >= out.min) || !std::isfinite(out.max))
    r.fail(key, "must satisfy " + std::to_string(lo) + " <= min <= max (finite)");
  return out;
}

FitQuality read_quality(JsonObjectReader& parent, const std::string& key = "fit_quality") {
  JsonObjectReader r = parent.get_object(key);
  FitQuality q;
  q.samples = int(r.get_int("samples", 1, 1 << 30));
  q.median_abs_rel_err = r.get_number("median_abs_rel_err", 0, kInf);
  q.p95_abs_rel_err = r.get_number("p95_abs_rel_err", 0, kInf);
  r.finish();
  return q;
}

GridFit read_grid(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  GridFit g;
  const std::string kind = r.get_string("grid");
  if (!grid_kind_from_string(kind, g.kind))
    r.fail("grid", "unknown grid '" + kind + "'; known: q_per_head, q_per_kv_head, k_per_head, k_per_kv_head");
  g.ctas_per_sm = int(r.get_int("ctas_per_sm", 1, 64));
  g.cta_s = r.get_number("cta_s", 0, 1.0);
  g.head_s = r.get_number("head_s", 0, 1.0);
  g.tile_full_s = r.get_number("tile_full_s", 0, 1.0);
  g.tile_partial_s = r.get_number("tile_partial_s", 0, 1.0);
  g.partial_visible_s = r.get_number("partial_visible_s", 0, 1.0);
  r.finish();
  return g;
}

KernelFit read_kernel(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  KernelFit f;
  f.dir = read_direction(r);
  f.head_dim = int(r.get_int("head_dim", 8, 1024));
  f.tile.q = r.get_int("tile_q", 8, 1024);
  f.tile.k = r.get_int("tile_k", 8, 1024);
  f.alone_fraction = r.get_number("alone_fraction", 1e-3, 1.0);
  f.launch_s = r.get_number("launch_s", 0, 1.0);
  const Json& gs = r.raw("grids");
  if (!gs.is_array() || gs.empty())
    r.fail("grids", "must be a non-empty array of the op's launches");
  double per_tile = 0;
  for (size_t i = 0; i < gs.size(); ++i) {
    f.grids.push_back(read_grid(gs[i], r.path_of("grids") + "[" + std::to_string(i) + "]"));
    per_tile += f.grids.back().tile_full_s;
  }
  if (per_tile <= 0)
    r.fail("grids", "some grid must have tile_full_s > 0: a tile cannot take no time");
  f.hbm_bytes_per_s = r.get_number("hbm_bytes_per_s", 1e6, 1e15);
  f.hbm_source = r.get_enum("hbm_source", {"fit", "spec"});
  f.tiles = read_range(r, "tiles", 0);
  f.ctas = read_range(r, "ctas", 0);
  f.tokens = read_range(r, "tokens", 0);
  f.partial_fraction = read_range(r, "partial_fraction", 0);
  f.gqa = read_range(r, "gqa", 1);
  f.quality = read_quality(r);
  const Json& cs = r.raw("candidates");
  if (!cs.is_array())
    r.fail("candidates", "must be an array of {tile_q, tile_k, grids, loss}");
  for (size_t i = 0; i < cs.size(); ++i) {
    JsonObjectReader c(cs[i], r.path_of("candidates") + "[" + std::to_string(i) + "]");
    KernelFit::Candidate k;
    k.tile.q = c.get_int("tile_q", 8, 1024);
    k.tile.k = c.get_int("tile_k", 8, 1024);
    for (const auto& g : c.get_string_array("grids")) {
      GridKind kind;
      if (!grid_kind_from_string(g, kind))
        c.fail("grids", "unknown grid '" + g + "'");
      k.grids.push_back(kind);
    }
    k.loss = c.get_number("loss", 0, kInf);
    c.finish();
    f.candidates.push_back(k);
  }
  r.finish();
  return f;
}

MergeFit read_merge(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  MergeFit f;
  f.dir = read_direction(r);
  f.launch_s = r.get_number("launch_s", 0, 1.0);
  f.bytes_per_s = r.get_number("bytes_per_s", 1e6, 1e15);
  f.bytes = read_range(r, "bytes", 0);
  f.quality = read_quality(r);
  r.finish();
  return f;
}

CommFit read_comm(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  CommFit f;
  f.link = r.get_enum("link", {"intra_node", "inter_node"});
  f.op = r.get_enum("op", {"p2p", "all_gather", "reduce_scatter", "all_to_all", "all_reduce"});
  f.latency_s = r.get_number("latency_s", 0, 1.0);
  f.bandwidth_bytes_per_s = r.get_number("bandwidth_bytes_per_s", 1e3, 1e15);
  const Json& c = r.raw("correction");
  if (!c.is_array())
    r.fail("correction", "must be an array of [bytes_sent, factor] pairs");
  double last = -1;
  for (const auto& e : c) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_number() || !e[1].is_number())
      r.fail("correction", "every entry must be [bytes_sent, factor]");
    double b = e[0].get<double>(), k = e[1].get<double>();
    if (!(b > last) || !(k > 0.01 && k < 100))
      r.fail("correction", "bytes must increase and factors lie in (0.01, 100); entry [" + json_value_text(e[0]) +
                               ", " + json_value_text(e[1]) + "] does not");
    last = b;
    f.correction.push_back({b, k});
  }
  f.bytes = read_range(r, "bytes_sent", 0);
  f.group = read_range(r, "group", 2);
  f.quality = read_quality(r);
  if (r.has("line_fit_quality")) // absent in profiles written before 2026-11-28
    f.line_quality = read_quality(r, "line_fit_quality");
  r.finish();
  return f;
}
} // namespace

Json profile_to_json(const Profile& p) {
  Json kernels = Json::array(), comms = Json::array();
  for (const auto& k : p.kernels) {
    Json grids = Json::array();
    for (const auto& g : k.grids)
      grids.push_back({{"grid", to_string(g.kind)},
                       {"ctas_per_sm", g.ctas_per_sm},
                       {"cta_s", g.cta_s},
                       {"head_s", g.head_s},
                       {"tile_full_s", g.tile_full_s},
                       {"tile_partial_s", g.tile_partial_s},
                       {"partial_visible_s", g.partial_visible_s}});
    Json candidates = Json::array();
    for (const auto& c : k.candidates) {
      Json names = Json::array();
      for (GridKind g : c.grids)
        names.push_back(to_string(g));
      candidates.push_back({{"tile_q", c.tile.q}, {"tile_k", c.tile.k}, {"grids", names}, {"loss", c.loss}});
    }
    kernels.push_back({{"direction", to_string(k.dir)},
                       {"head_dim", k.head_dim},
                       {"tile_q", k.tile.q},
                       {"tile_k", k.tile.k},
                       {"alone_fraction", k.alone_fraction},
                       {"launch_s", k.launch_s},
                       {"grids", grids},
                       {"hbm_bytes_per_s", k.hbm_bytes_per_s},
                       {"hbm_source", k.hbm_source},
                       {"tiles", range_json(k.tiles)},
                       {"ctas", range_json(k.ctas)},
                       {"tokens", range_json(k.tokens)},
                       {"partial_fraction", range_json(k.partial_fraction)},
                       {"gqa", range_json(k.gqa)},
                       {"fit_quality", quality_json(k.quality)},
                       {"candidates", candidates}});
  }
  Json merges = Json::array();
  for (const auto& m : p.merges)
    merges.push_back({{"direction", to_string(m.dir)},
                      {"launch_s", m.launch_s},
                      {"bytes_per_s", m.bytes_per_s},
                      {"bytes", range_json(m.bytes)},
                      {"fit_quality", quality_json(m.quality)}});
  for (const auto& c : p.comms) {
    Json corr = Json::array();
    for (const auto& [b, k] : c.correction)
      corr.push_back({b, k});
    comms.push_back({{"link", c.link},
                     {"op", c.op},
                     {"latency_s", c.latency_s},
                     {"bandwidth_bytes_per_s", c.bandwidth_bytes_per_s},
                     {"correction", corr},
                     {"bytes_sent", range_json(c.bytes)},
                     {"group", range_json(c.group)},
                     {"fit_quality", quality_json(c.quality)}});
    if (c.line_quality.samples > 0)
      comms.back()["line_fit_quality"] = quality_json(c.line_quality);
  }
  Json j{{"format", kProfileFormat},
         {"version", kProfileVersion},
         {"name", p.name},
         {"gpu_name", p.gpu_name},
         {"sm_count", p.sm_count},
         {"gpus", p.gpus},
         {"hardware", p.hardware},
         {"hardware_gpu", p.hardware_gpu},
         {"date_utc", p.date_utc},
         {"git_sha", p.git_sha},
         {"source", p.source},
         {"raw_file", p.raw_file},
         {"tile_m", p.tile_m},
         {"tile_n", p.tile_n},
         {"kernel_build", kernel_build_json(p.kernel_build)},
         {"kernels", kernels},
         {"merges", merges},
         {"comms", comms},
         {"not_calibrated", p.not_calibrated}};
  if (p.has_overlap)
    j["overlap"] = {{"compute_slowdown", p.overlap.compute_slowdown},
                    {"comm_slowdown", p.overlap.comm_slowdown},
                    {"samples", p.overlap.samples}};
  return j;
}

Profile profile_from_json(const Json& j, const std::string& where) {
  if (!j.is_object())
    throw UserError(where + ": a profile must be a JSON object");
  JsonObjectReader r(j, "");
  auto fail = [&](const std::string& key, const std::string& why) { throw UserError(where + ": " + key + ": " + why); };
  try {
    if (r.get_string("format") != kProfileFormat)
      r.fail("format", std::string("a profile must have format \"") + kProfileFormat + "\"");
    if (r.get_int("version", 1, kProfileVersion) < kProfileVersion)
      r.fail("version", "version 1 profiles hold the kernel model before 2026-12-07 (128-tile waves), which this "
                        "build no longer evaluates; refit the calibration run: `cpsim calibrate --from-run "
                        "results/calibration/<run> --out <profile>` (docs/calibration.md)");
    Profile p;
    p.name = r.get_string("name");
    p.gpu_name = r.get_string("gpu_name");
    p.sm_count = int(r.get_int("sm_count", 1, 100000));
    p.gpus = int(r.get_int("gpus", 1, 1 << 20));
    p.hardware = r.get_string("hardware");
    p.hardware_gpu = r.get_string("hardware_gpu");
    p.date_utc = r.get_string("date_utc");
    p.git_sha = r.get_string("git_sha");
    p.source = r.get_string("source");
    p.raw_file = r.get_string_or("raw_file", "");
    p.tile_m = r.get_int("tile_m", 16, 1024);
    p.tile_n = r.get_int("tile_n", 16, 1024);
    p.kernel_build = read_kernel_build(r, "kernel_build");
    const Json& ks = r.raw("kernels");
    if (!ks.is_array())
      r.fail("kernels", "must be an array");
    for (size_t i = 0; i < ks.size(); ++i) {
      KernelFit k = read_kernel(ks[i], "kernels[" + std::to_string(i) + "]");
      for (const auto& o : p.kernels)
        if (o.dir == k.dir && o.head_dim == k.head_dim)
          fail("kernels[" + std::to_string(i) + "]",
               "a second entry for direction " + to_string(k.dir) + ", head_dim " + std::to_string(k.head_dim));
      p.kernels.push_back(k);
    }
    if (r.has("merges")) { // absent in profiles written before 2026-12-02
      const Json& ms = r.raw("merges");
      if (!ms.is_array())
        r.fail("merges", "must be an array");
      for (size_t i = 0; i < ms.size(); ++i) {
        MergeFit m = read_merge(ms[i], "merges[" + std::to_string(i) + "]");
        for (const auto& o : p.merges)
          if (o.dir == m.dir)
            fail("merges[" + std::to_string(i) + "]", "a second entry for direction " + to_string(m.dir));
        p.merges.push_back(m);
      }
    }
    const Json& cs = r.raw("comms");
    if (!cs.is_array())
      r.fail("comms", "must be an array");
    for (size_t i = 0; i < cs.size(); ++i) {
      CommFit c = read_comm(cs[i], "comms[" + std::to_string(i) + "]");
      for (const auto& o : p.comms)
        if (o.link == c.link && o.op == c.op)
          fail("comms[" + std::to_string(i) + "]", "a second entry for " + c.op + " over " + c.link);
      p.comms.push_back(c);
    }
    if (p.kernels.empty() && p.comms.empty())
      fail("kernels", "the profile calibrates nothing (no kernels and no comms)");
    if (r.has("overlap")) {
      JsonObjectReader o = r.get_object("overlap");
      p.has_overlap = true;
      p.overlap.compute_slowdown = o.get_number("compute_slowdown", 0.5, 10);
      p.overlap.comm_slowdown = o.get_number("comm_slowdown", 0.5, 10);
      p.overlap.samples = int(o.get_int("samples", 1, 1 << 30));
      o.finish();
    }
    p.not_calibrated = r.get_string_array("not_calibrated");
    r.finish();
    return p;
  } catch (const UserError& e) {
    std::string m = e.what();
    if (m.rfind(where, 0) == 0)
      throw;
    throw UserError(where + ": " + m);
  }
}

Profile load_profile(const std::string& path) {
  return profile_from_json(load_json_file(path), "profile '" + path + "'");
}

} // namespace cpsim::calib
