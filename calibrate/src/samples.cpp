// Raw measurement files (see samples.hpp).
#include "cpsim/calibrate/samples.hpp"

#include <algorithm>
#include <limits>

namespace cpsim::calib {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

Json kernel_json(const KernelSample& s) {
  return {{"plan", s.plan},
          {"mask", s.mask},
          {"direction", to_string(s.x.dir)},
          {"head_dim", s.x.head_dim},
          {"ctas", s.x.ctas},
          {"full_tiles", s.x.full_tiles},
          {"partial_tiles", s.x.partial_tiles},
          {"bytes", s.x.bytes},
          {"tokens", s.x.tokens},
          {"measured_s", s.measured_s}};
}

KernelSample read_kernel(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  KernelSample s;
  s.plan = r.get_string("plan");
  s.mask = r.get_string("mask");
  s.x.dir = read_direction(r);
  s.x.head_dim = int(r.get_int("head_dim", 8, 1024));
  s.x.ctas = r.get_int("ctas", 1, kMax);
  s.x.full_tiles = r.get_int("full_tiles", 0, kMax);
  s.x.partial_tiles = r.get_int("partial_tiles", 0, kMax);
  if (s.x.full_tiles + s.x.partial_tiles == 0)
    r.fail("full_tiles", "a measured attention op has at least one tile");
  s.x.bytes = r.get_number("bytes", 0, kInf);
  s.x.tokens = r.get_int("tokens", 1, kMax);
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
          {"version", 1},
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
    r.get_int("version", 1, 1);
    RawMeasurements m;
    m.gpu_name = r.get_string("gpu_name");
    m.sm_count = int(r.get_int("sm_count", 1, 100000));
    m.gpus = int(r.get_int("gpus", 1, 1 << 20));
    m.hardware = r.get_string("hardware");
    m.hardware_gpu = r.get_string("hardware_gpu");
    m.date_utc = r.get_string("date_utc");
    m.git_sha = r.get_string("git_sha");
    m.tile_m = r.get_int("tile_m", 16, 1024);
    m.tile_n = r.get_int("tile_n", 16, 1024);
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
