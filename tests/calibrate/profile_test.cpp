// Profile and raw-measurement files: a round trip keeps every field, and every kind of bad file is
// refused with a message naming the key (no silent default).
#include "cpsim/calibrate/profile.hpp"
#include "cpsim/calibrate/samples.hpp"
#include "profile_factory.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

using namespace cpsim;
using namespace cpsim::calib;

TEST_CASE("calibrate::profile: JSON round trip keeps every field") {
  Profile p = test::test_profile();
  p.comms[0].correction = {{1024, 1.2}, {1 << 20, 0.9}};
  p.not_calibrated = {"reduce_scatter: refused"};
  Json j = profile_to_json(p);
  Profile q = profile_from_json(j, "t");
  CHECK(profile_to_json(q) == j);
  CHECK(q.kernels.size() == 2);
  CHECK(q.kernels[1].dir == Direction::BACKWARD);
  CHECK(q.comms[0].correction.size() == 2);
  CHECK(q.overlap.compute_slowdown == 1.1);
  CHECK(q.hardware_gpu == p.hardware_gpu);
  CHECK(q.kernel_build.source_sha256 == p.kernel_build.source_sha256);
  REQUIRE(q.kernels[1].grids.size() == 2);
  CHECK(q.kernels[1].grids[0].kind == GridKind::K_PER_KV_HEAD);
  CHECK(q.kernels[1].grids[1].tile_full_s == 1.5e-6);
  CHECK(q.kernels[0].tile == KernelTile{64, 64});
  CHECK(q.kernels[0].alone_fraction == 0.7);
  CHECK(q.kernels[0].candidates.size() == 1);
  // the line's own fit quality is kept when recorded, and profiles written without it still load
  p.comms[0].line_quality = {11, 0.05, 0.2};
  Profile r = profile_from_json(profile_to_json(p), "t");
  CHECK(r.comms[0].line_quality.p95_abs_rel_err == 0.2);
  Json old = profile_to_json(p);
  old["comms"][0].erase("line_fit_quality");
  CHECK(profile_from_json(old, "t").comms[0].line_quality.samples == 0);
  // merge fits are kept; profiles written before they existed load with none
  p.merges = {{Direction::BACKWARD, 3e-6, 2e12, {1e5, 1e9}, {12, 0.03, 0.1}}};
  const Json with = profile_to_json(p);
  const Profile m = profile_from_json(with, "t");
  REQUIRE(m.merges.size() == 1);
  CHECK(m.merges[0].dir == Direction::BACKWARD);
  CHECK(profile_to_json(m) == with);
  Json before = with;
  before.erase("merges");
  CHECK(profile_from_json(before, "t").merges.empty());
}

TEST_CASE("calibrate::profile: bad merge fits are named errors") {
  Profile p = test::test_profile();
  p.merges = {{Direction::FORWARD, 3e-6, 2e12, {1e5, 1e9}, {12, 0.03, 0.1}}};
  const Json good = profile_to_json(p);
  auto fails = [&](const std::function<void(Json&)>& edit, const std::string& expect) {
    Json j = good;
    edit(j);
    CHECK_THROWS_WITH(profile_from_json(j, "profile 'p.json'"), Catch::Contains(expect));
  };
  fails([](Json& j) { j["merges"][0]["bytes_per_s"] = 0; }, "merges[0].bytes_per_s");
  fails([](Json& j) { j["merges"][0]["direction"] = "up"; }, "merges[0].direction");
  fails([](Json& j) { j["merges"].push_back(j["merges"][0]); }, "a second entry for direction fwd");
  fails([](Json& j) { j["merges"] = 3; }, "merges");
}

TEST_CASE("calibrate::profile: bad profiles are named errors") {
  const Json good = profile_to_json(test::test_profile());
  auto fails = [&](const std::function<void(Json&)>& edit, const std::string& expect) {
    Json j = good;
    edit(j);
    CHECK_THROWS_WITH(profile_from_json(j, "profile 'p.json'"),
                      Catch::Contains("profile 'p.json'") && Catch::Contains(expect));
  };
  fails([](Json& j) { j["format"] = "cpsim-plan"; }, "format");
  fails([](Json& j) { j.erase("gpu_name"); }, "gpu_name' is missing");
  fails([](Json& j) { j["colour"] = "red"; }, "colour");
  fails([](Json& j) { j["version"] = 1; }, "--from-run");
  fails([](Json& j) { j["kernels"][0]["grids"][0]["tile_full_s"] = 0; }, "kernels[0].grids");
  fails([](Json& j) { j["kernels"][0]["grids"][0]["tile_full_s"] = -1; }, "kernels[0].grids[0].tile_full_s");
  fails([](Json& j) { j["kernels"][0]["grids"][0]["grid"] = "diagonal"; }, "kernels[0].grids[0].grid");
  fails([](Json& j) { j["kernels"][0]["grids"] = Json::array(); }, "kernels[0].grids");
  fails([](Json& j) { j["kernels"][0]["alone_fraction"] = 1.5; }, "kernels[0].alone_fraction");
  fails([](Json& j) { j["kernels"][0]["tile_q"] = 0; }, "kernels[0].tile_q");
  fails([](Json& j) { j["kernels"][0]["gqa"] = Json::array({0.5, 2}); }, "kernels[0].gqa");
  fails([](Json& j) { j["kernel_build"]["source_sha256"] = "xyz"; }, "kernel_build.source_sha256");
  fails([](Json& j) { j.erase("kernel_build"); }, "kernel_build");
  fails([](Json& j) { j["kernels"][0]["launch_s"] = -1; }, "kernels[0].launch_s");
  fails([](Json& j) { j["kernels"][0]["direction"] = "sideways"; }, "kernels[0].direction");
  fails([](Json& j) { j["kernels"][0]["tiles"] = Json::array({5, 1}); }, "kernels[0].tiles");
  fails([](Json& j) { j["kernels"][1] = j["kernels"][0]; }, "a second entry for direction fwd, head_dim 64");
  fails([](Json& j) { j["comms"][0]["bandwidth_bytes_per_s"] = 0; }, "comms[0].bandwidth_bytes_per_s");
  fails([](Json& j) { j["comms"][0]["link"] = "pcie"; }, "comms[0].link");
  fails(
      [](Json& j) {
        j["comms"][0]["correction"] = Json::array({Json::array({2048, 1.0}), Json::array({1024, 1.0})});
      },
      "bytes must increase");
  fails([](Json& j) { j["comms"][0]["group"] = Json::array({1, 2}); }, "comms[0].group");
  fails([](Json& j) { j["overlap"]["compute_slowdown"] = 0.1; }, "overlap.compute_slowdown");
  fails(
      [](Json& j) {
        j["kernels"] = Json::array();
        j["comms"] = Json::array();
      },
      "calibrates nothing");
  fails([](Json& j) { j["kernels"][0]["fit_quality"].erase("samples"); }, "kernels[0].fit_quality.samples");
}

TEST_CASE("calibrate::profile: load_profile names a missing file") {
  CHECK_THROWS_WITH(load_profile("/nonexistent/p.json"), Catch::Contains("/nonexistent/p.json"));
}

namespace {
/** A run's header fields, as `cpsim calibrate` records them. */
RawMeasurements raw_run(const std::string& gpu, int gpus, const std::string& hardware, const std::string& date_sha) {
  RawMeasurements r;
  r.gpu_name = r.hardware_gpu = gpu;
  r.sm_count = 132;
  r.gpus = gpus;
  r.hardware = hardware;
  r.date_utc = "d" + date_sha;
  r.git_sha = "s" + date_sha;
  return r;
}

KernelSample kernel_sample(Direction dir) {
  KernelSample k;
  k.plan = "k1";
  k.mask = "causal";
  k.workload.seq_lens = {4096};
  k.workload.heads = 8;
  k.workload.kv_heads = 2;
  k.workload.head_dim = 128;
  k.workload.mask.kind = MaskKind::CAUSAL;
  k.op.kind = OpKind::ATTENTION;
  k.op.dir = dir;
  k.op.head_begin = 2;
  k.op.head_end = 6;
  k.op.segments = {{0, {1024, 2048}, {0, 2048}}, {0, {1, 4096, 3}, {0, 4096, 3}}};
  k.measured_s = 1e-4;
  return k;
}
} // namespace

TEST_CASE("calibrate::samples: raw measurements round trip and strict reading") {
  RawMeasurements r = raw_run("NVIDIA H200", 2, "h200-sxm-2", "");
  r.kernels = {kernel_sample(Direction::BACKWARD)};
  r.comms = {{"p2p_intra_node", "intra_node", "p2p", 2, 4096, 4096, 2e-5}};
  r.overlaps = {{"o", 1e-3, 1.1e-3, 2e-3, 2.2e-3}};
  r.merges = {{"k", Direction::BACKWARD, 4e6, 3e-6}};
  r.not_calibrated = {"x"};
  Json j = raw_to_json(r);
  RawMeasurements q = raw_from_json(j, "raw");
  CHECK(raw_to_json(q) == j);
  CHECK(q.kernels[0].op.segments == r.kernels[0].op.segments);
  CHECK(q.kernels[0].op.head_begin == 2);
  CHECK(q.kernels[0].workload.kv_heads == 2);
  REQUIRE(q.merges.size() == 1);
  CHECK(q.merges[0].dir == Direction::BACKWARD);
  Json before = j; // raw files written before merge samples existed
  before.erase("merge_samples");
  CHECK(raw_from_json(before, "raw").merges.empty());
  before = j;
  before["merge_samples"][0]["bytes"] = 0;
  CHECK_THROWS_WITH(raw_from_json(before, "raw"), Catch::Contains("merge_samples[0].bytes"));
  Json bad = j;
  bad["kernel_samples"][0]["measured_s"] = 0;
  CHECK_THROWS_WITH(raw_from_json(bad, "raw 'r.json'"),
                    Catch::Contains("raw 'r.json'") && Catch::Contains("kernel_samples[0].measured_s"));
  bad = j;
  bad["kernel_samples"][0]["op"]["segments"][0]["q"] = Json::array({0, 5000, 1});
  CHECK_THROWS_WITH(raw_from_json(bad, "raw"), Catch::Contains("kernel_samples[0].op.segments[0]"));
  bad = j;
  bad["kernel_samples"][0]["op"]["heads"] = Json::array({6, 9});
  CHECK_THROWS_WITH(raw_from_json(bad, "raw"), Catch::Contains("kernel_samples[0].op.heads"));
  // version 1 files keep link samples readable; their attention samples (old features) are refused by name
  bad = j;
  bad["version"] = 1;
  bad.erase("kernel_build");
  CHECK_THROWS_WITH(raw_from_json(bad, "raw"), Catch::Contains("--from-run"));
  bad["kernel_samples"] = Json::array();
  CHECK(raw_from_json(bad, "raw").comms.size() == 1);
  bad = j;
  bad["comm_samples"][0]["op"] = "broadcast";
  CHECK_THROWS_WITH(raw_from_json(bad, "raw"), Catch::Contains("comm_samples[0].op"));
}

TEST_CASE("calibrate::samples: kernels measured on one GPU and links on two join into one set") {
  RawMeasurements one = raw_run("NVIDIA H100 80GB HBM3", 1, "h100-sxm-1", "1");
  one.kernels = {kernel_sample(Direction::FORWARD), kernel_sample(Direction::FORWARD)};
  one.not_calibrated = {"communication and overlap: one GPU only", "inter_node links: calibrate runs on the GPUs of one node"};
  RawMeasurements two = raw_run("NVIDIA H100 80GB HBM3", 2, "h100-sxm-2", "2");
  two.comms = {{"p2p_intra_node", "intra_node", "p2p", 2, 4096, 4096, 2e-5}};
  two.overlaps = {{"o", 1e-3, 1.1e-3, 2e-3, 2.2e-3}};
  two.not_calibrated = {"kernel: not selected (--sweeps comm,overlap)", "inter_node links: calibrate runs on the GPUs of one node",
                        "reduce_scatter: 1 of 1 plans did not run"};
  RawMeasurements m = merge_raw({one, two}, {"a.json", "b.json"});
  CHECK(m.kernels.size() == 2);
  CHECK(m.comms.size() == 1);
  CHECK(m.overlaps.size() == 1);
  CHECK(m.gpus == 2);
  CHECK(m.hardware == "h100-sxm-2");
  CHECK(m.date_utc == "d1 + d2");
  // what the other run measured is no longer "not calibrated"; what nobody measured stays, once
  CHECK(m.not_calibrated == std::vector<std::string>{"inter_node links: calibrate runs on the GPUs of one node",
                                                      "reduce_scatter: 1 of 1 plans did not run"});
  RawMeasurements other = two;
  other.gpu_name = "NVIDIA H200";
  CHECK_THROWS_WITH(merge_raw({one, other}, {"a.json", "c.json"}),
                    Catch::Contains("'c.json'") && Catch::Contains("NVIDIA H200") && Catch::Contains("one GPU model"));
  // kernels of two implementations are not one model
  other = one;
  other.kernel_build = {std::string(64, 'b'), "x"};
  CHECK_THROWS_WITH(merge_raw({one, other}, {"a.json", "c.json"}), Catch::Contains("one kernel implementation"));
  other = two;
  other.tile_n = 64;
  CHECK_THROWS_WITH(merge_raw({one, other}, {"a.json", "c.json"}), Catch::Contains("tiles"));
  CHECK_THROWS(merge_raw({}, {}));
}
