// Raw measurement files (see samples.hpp).
#include "cpsim/calibrate/samples.hpp"

#include <algorithm>
#include <limits>

namespace cpsim::calib {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

Json range3(const TokenRange& r) { return Json::array({r.begin, r.end, r.stride}); }

TokenRange read_range3(JsonObjectReader& r, const std::string& key) {
  const Json& v = r.raw(key);
  if (!v.is_array() || v.size() != 3 || !v[0].is_number_integer() || !v[1].is_number_integer() ||
      !v[2].is_number_integer())
    r.fail(key, "must be [begin, end, stride] (three integers)");
  TokenRange t{v[0].get<int64_t>(), v[1].get<int64_t>(), v[2].get<int64_t>()};
  if (t.begin < 0 || t.end <= t.begin || t.stride < 1)
    r.fail(key, "must satisfy 0 <= begin < end and stride >= 1");
  return t;
}

Json kernel_json(const KernelSample& s) {
  Json segs = Json::array();
  for (const auto& g : s.op.segments)
    segs.push_back({{"seq", g.seq}, {"q", range3(g.q)}, {"k", range3(g.k)}});
  Json op{{"direction", to_string(s.op.dir)}, {"heads", {s.op.head_begin, s.op.head_end}}, {"segments", segs}};
  if (!s.op.head_ids.empty())
    op["head_ids"] = s.op.head_ids;
  return {{"plan", s.plan},
          {"mask", s.mask},
          {"workload", workload_to_json(s.workload)},
          {"op", op},
          {"measured_s", s.measured_s}};
}

KernelSample read_kernel(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  KernelSample s;
  s.plan = r.get_string("plan");
  s.mask = r.get_string("mask");
  s.workload = workload_from_json(r.raw("workload"), r.path_of("workload"), "");
  JsonObjectReader o = r.get_object("op");
  s.op.kind = OpKind::ATTENTION;
  s.op.dir = read_direction(o);
  const Json& h = o.raw("heads");
  if (!h.is_array() || h.size() != 2 || !h[0].is_number_integer() || !h[1].is_number_integer() ||
      h[0].get<int>() < 0 || h[1].get<int>() <= h[0].get<int>() || h[1].get<int>() > s.workload.heads)
    o.fail("heads", "must be [begin, end) with 0 <= begin < end <= the workload's heads");
  s.op.head_begin = h[0].get<int>();
  s.op.head_end = h[1].get<int>();
  if (o.has("head_ids"))
    for (const auto& v : o.raw("head_ids")) {
      if (!v.is_number_integer() || v.get<int>() < 0 || v.get<int>() >= s.workload.heads)
        o.fail("head_ids", "must list query heads of the workload");
      s.op.head_ids.push_back(v.get<int>());
    }
  const Json& segs = o.raw("segments");
  if (!segs.is_array() || segs.empty())
    o.fail("segments", "must be a non-empty array");
  for (size_t i = 0; i < segs.size(); ++i) {
    JsonObjectReader g(segs[i], o.path_of("segments") + "[" + std::to_string(i) + "]");
    AttnSegment a;
    a.seq = int(g.get_int("seq", 0, int64_t(s.workload.seq_lens.size()) - 1));
    a.q = read_range3(g, "q");
    a.k = read_range3(g, "k");
    const int64_t len = s.workload.seq_lens[size_t(a.seq)];
    if (a.q.end > len || a.k.end > len)
      g.fail("q", "positions must lie inside sequence " + std::to_string(a.seq) + " (" + std::to_string(len) +
                      " tokens)");
    g.finish();
    s.op.segments.push_back(a);
  }
  o.finish();
  s.measured_s = r.get_number("measured_s", 1e-9, 1e4);
  r.finish();
  return s;
}

MergeSample read_merge(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  MergeSample s;
  s.plan = r.get_string("plan");
  s.dir = read_direction(r);
  s.bytes = r.get_number("bytes", 1, kInf);
  s.measured_s = r.get_number("measured_s", 1e-9, 1e4);
  r.finish();
  return s;
}

CommSample read_comm(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  CommSample s;
  s.plan = r.get_string("plan");
  s.link = r.get_enum("link", {"intra_node", "inter_node"});
  s.op = r.get_enum("op", {"p2p", "all_gather", "reduce_scatter", "all_to_all", "all_reduce"});
  s.group = int(r.get_int("group", 2, 1 << 20));
  s.bytes = r.get_int("bytes", 1, kMax);
  s.bytes_sent = r.get_int("bytes_sent", 1, kMax);
  s.measured_s = r.get_number("measured_s", 1e-9, 1e4);
  r.finish();
  return s;
}

OverlapSample read_overlap(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  OverlapSample s;
  s.plan = r.get_string("plan");
  s.compute_alone_s = r.get_number("compute_alone_s", 1e-9, 1e4);
  s.compute_overlapped_s = r.get_number("compute_overlapped_s", 1e-9, 1e4);
  s.comm_alone_s = r.get_number("comm_alone_s", 1e-9, 1e4);
  s.comm_overlapped_s = r.get_number("comm_overlapped_s", 1e-9, 1e4);
  r.finish();
  return s;
}

template <class T, class F> std::vector<T> read_array(JsonObjectReader& r, const std::string& key, F read) {
  const Json& a = r.raw(key);
  if (!a.is_array())
    r.fail(key, "must be an array");
  std::vector<T> out;
  for (size_t i = 0; i < a.size(); ++i)
    out.push_back(read(a[i], key + "[" + std::to_string(i) + "]"));
  return out;
}
} // namespace

Json raw_to_json(const RawMeasurements& r) {
  Json ks = Json::array(), ms = Json::array(), cs = Json::array(), os = Json::array();
  for (const auto& s : r.kernels)
    ks.push_back(kernel_json(s));
  for (const auto& s : r.merges)
    ms.push_back({{"plan", s.plan},
                  {"direction", to_string(s.dir)},
                  {"bytes", s.bytes},
                  {"measured_s", s.measured_s}});
  for (const auto& s : r.comms)
    cs.push_back({{"plan", s.plan},
                  {"link", s.link},
                  {"op", s.op},
                  {"group", s.group},
                  {"bytes", s.bytes},
                  {"bytes_sent", s.bytes_sent},
                  {"measured_s", s.measured_s}});
  for (const auto& s : r.overlaps)
    os.push_back({{"plan", s.plan},
                  {"compute_alone_s", s.compute_alone_s},
                  {"compute_overlapped_s", s.compute_overlapped_s},
                  {"comm_alone_s", s.comm_alone_s},
                  {"comm_overlapped_s", s.comm_overlapped_s}});
  return {{"format", kRawFormat},
          {"version", kRawVersion},
          {"kernel_build", kernel_build_json(r.kernel_build)},
          {"gpu_name", r.gpu_name},
          {"sm_count", r.sm_count},
          {"gpus", r.gpus},
          {"hardware", r.hardware},
          {"hardware_gpu", r.hardware_gpu},
          {"date_utc", r.date_utc},
          {"git_sha", r.git_sha},
          {"tile_m", r.tile_m},
          {"tile_n", r.tile_n},
          {"kernel_samples", ks},
          {"merge_samples", ms},
          {"comm_samples", cs},
          {"overlap_samples", os},
          {"not_calibrated", r.not_calibrated}};
}

RawMeasurements raw_from_json(const Json& j, const std::string& where) {
  try {
    JsonObjectReader r(j, "");
    if (r.get_string("format") != kRawFormat)
      r.fail("format", std::string("raw calibration measurements have format \"") + kRawFormat + "\"");
    const int version = int(r.get_int("version", 1, kRawVersion));
    RawMeasurements m;
    if (version >= 2)
      m.kernel_build = read_kernel_build(r, "kernel_build");
    m.gpu_name = r.get_string("gpu_name");
    m.sm_count = int(r.get_int("sm_count", 1, 100000));
    m.gpus = int(r.get_int("gpus", 1, 1 << 20));
    m.hardware = r.get_string("hardware");
    m.hardware_gpu = r.get_string("hardware_gpu");
    m.date_utc = r.get_string("date_utc");
    m.git_sha = r.get_string("git_sha");
    m.tile_m = r.get_int("tile_m", 16, 1024);
    m.tile_n = r.get_int("tile_n", 16, 1024);
    if (version == 1) {
      const Json& ks = r.raw("kernel_samples");
      if (!ks.is_array())
        r.fail("kernel_samples", "must be an array");
      if (!ks.empty())
        r.fail("version", "format version 1 stores attention samples as features of the kernel model before "
                          "2026-12-07, which the current fit cannot use; refit the run folder with "
                          "`cpsim calibrate --from-run DIR` (it reads the ops from DIR/plans and DIR/measured)");
    } else
      m.kernels = read_array<KernelSample>(r, "kernel_samples", read_kernel);
    if (r.has("merge_samples"))
      m.merges = read_array<MergeSample>(r, "merge_samples", read_merge);
    m.comms = read_array<CommSample>(r, "comm_samples", read_comm);
    m.overlaps = read_array<OverlapSample>(r, "overlap_samples", read_overlap);
    m.not_calibrated = r.get_string_array("not_calibrated");
    r.finish();
    return m;
  } catch (const UserError& e) {
    throw UserError(where + ": " + e.what());
  }
}

RawMeasurements load_raw(const std::string& path) {
  return raw_from_json(load_json_file(path), "raw measurements '" + path + "'");
}

RawMeasurements merge_raw(const std::vector<RawMeasurements>& runs, const std::vector<std::string>& names) {
  if (runs.empty())
    throw UserError("no raw measurements to merge");
  auto name = [&](size_t i) { return i < names.size() ? "'" + names[i] + "'" : "run " + std::to_string(i); };
  RawMeasurements m = runs[0];
  for (size_t i = 1; i < runs.size(); ++i) {
    const RawMeasurements& r = runs[i];
    if (r.gpu_name != m.gpu_name || r.sm_count != m.sm_count)
      throw UserError("raw measurements " + name(i) + " were taken on " + r.gpu_name + " (" + std::to_string(r.sm_count) +
                      " SMs) but " + name(0) + " on " + m.gpu_name + " (" + std::to_string(m.sm_count) +
                      " SMs): one profile describes one GPU model");
    if (r.tile_m != m.tile_m || r.tile_n != m.tile_n)
      throw UserError("raw measurements " + name(i) + " use " + std::to_string(r.tile_m) + "x" + std::to_string(r.tile_n) +
                      " tiles but " + name(0) + " " + std::to_string(m.tile_m) + "x" + std::to_string(m.tile_n));
    if (!r.kernels.empty()) {
      if (!m.kernels.empty() && !r.kernel_build.same_kernels(m.kernel_build))
        throw UserError("raw measurements " + name(i) + " measured " + describe(r.kernel_build) + " but " + name(0) +
                        " " + describe(m.kernel_build) + ": one profile describes one kernel implementation");
      if (m.kernels.empty())
        m.kernel_build = r.kernel_build;
    }
    m.kernels.insert(m.kernels.end(), r.kernels.begin(), r.kernels.end());
    m.merges.insert(m.merges.end(), r.merges.begin(), r.merges.end());
    m.comms.insert(m.comms.end(), r.comms.begin(), r.comms.end());
    m.overlaps.insert(m.overlaps.end(), r.overlaps.begin(), r.overlaps.end());
    m.not_calibrated.insert(m.not_calibrated.end(), r.not_calibrated.begin(), r.not_calibrated.end());
    if (r.gpus > m.gpus) { // the description of the larger machine covers both
      m.gpus = r.gpus;
      m.hardware = r.hardware;
      m.hardware_gpu = r.hardware_gpu;
    }
    if (m.date_utc.find(r.date_utc) == std::string::npos)
      m.date_utc += " + " + r.date_utc;
    if (m.git_sha.find(r.git_sha) == std::string::npos)
      m.git_sha += " + " + r.git_sha;
  }
  auto starts = [](const std::string& s, const char* p) { return s.rfind(p, 0) == 0; };
  std::vector<std::string> notes;
  for (const std::string& n : m.not_calibrated) {
    const bool covered = (starts(n, "kernel:") && !m.kernels.empty()) || (starts(n, "comm:") && !m.comms.empty()) ||
                         (starts(n, "overlap:") && !m.overlaps.empty()) ||
                         (starts(n, "communication and overlap") && !m.comms.empty() && !m.overlaps.empty());
    if (!covered && std::find(notes.begin(), notes.end(), n) == notes.end())
      notes.push_back(n);
  }
  m.not_calibrated = notes;
  return m;
}

} // namespace cpsim::calib
