// `cpsim calibrate`, `cpsim validate` and `--profile` end to end, without GPUs: fitting recorded
// raw measurements, validating given measured files (CSV, JSON, PNG), refusing the GPU paths with
// exit 2 and the cause, and predictions that say where they leave the calibrated ranges.
#include "cpsim/calibrate/fit.hpp"
#include "cpsim/calibrate/kernel_model.hpp"
#include "cpsim/calibrate/profile.hpp"
#include "cpsim/calibrate/samples.hpp"
#include "cpsim/model/json_reader.hpp"
#include "support/run_cpsim.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace cpsim;
using Catch::Contains;
using test::Run;

namespace {
std::string tmp(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("cpsim_calib_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}

calib::KernelFit truth(Direction dir) {
  calib::KernelFit k;
  k.dir = dir;
  k.head_dim = 64;
  k.tile = {64, 64};
  k.alone_fraction = 0.75;
  k.launch_s = 4e-6;
  calib::GridFit g;
  // a forward per query tile and head; a backward of one launch per key tile and head
  g.kind = dir == Direction::FORWARD ? GridKind::Q_PER_HEAD : GridKind::K_PER_HEAD;
  g.ctas_per_sm = 2;
  g.cta_s = 0.5e-6;
  g.tile_full_s = dir == Direction::FORWARD ? 1.5e-6 : 4e-6;
  g.tile_partial_s = g.tile_full_s * 1.2;
  k.grids = {g};
  k.hbm_bytes_per_s = 3e12;
  return k;
}

/** Raw measurements made from known parameters: kernels on a small grid of shapes, p2p from 1 KiB to 1 MiB. */
std::string write_raw() {
  calib::RawMeasurements r;
  r.gpu_name = "NVIDIA H100 80GB HBM3";
  r.sm_count = 132;
  r.gpus = 2;
  r.hardware = "h100-sxm-8";
  r.hardware_gpu = "NVIDIA H100 80GB HBM3";
  r.date_utc = "2026-11-24 09:00:00 UTC";
  r.git_sha = "test";
  r.kernel_build = calib::this_build_kernels();
  for (Direction d : {Direction::FORWARD, Direction::BACKWARD})
    for (int64_t seq : {576, 1088, 4160, 8192})
      for (int heads : {1, 4, 16})
        for (const char* mask : {"full", "causal"}) {
          calib::KernelSample s;
          s.plan = "synthetic";
          s.mask = mask;
          s.workload = workload_from_json({{"seq_lens", {seq}}, {"heads", heads}, {"kv_heads", 1}, {"head_dim", 64},
                                           {"dtype", "bf16"}, {"mask", {{"kind", mask}}}},
                                          "workload", "");
          s.op.kind = OpKind::ATTENTION;
          s.op.dir = d;
          s.op.head_end = heads;
          s.op.segments = {{0, {0, seq}, {0, seq}}};
          const MaskGeometry g(s.workload);
          const calib::KernelFit t = truth(d);
          s.measured_s = calib::kernel_time_s(t, calib::kernel_shape(s.op, s.workload, g, {64, 64}, {t.grids[0].kind}), 132);
          r.kernels.push_back(s);
        }
  for (int64_t b = 1024; b <= (1 << 20); b *= 4)
    r.comms.push_back({"p2p_intra_node", "intra_node", "p2p", 2, b, b, 9e-6 + double(b) / 280e9});
  r.not_calibrated = {"inter_node links: calibrate runs on the GPUs of one node"};
  std::string path = tmp("raw.json");
  save_json_file(path, calib::raw_to_json(r), 1);
  return path;
}

std::string write_scenario(const std::string& name, int64_t tokens) {
  std::string path = tmp(name + ".json");
  std::ofstream(path) << R"({"name": ")" << name << R"(", "hardware": "h100-sxm-8",
    "workload": {"seq_lens": [)"
                      << tokens << R"(], "heads": 4, "kv_heads": 4, "head_dim": 64, "dtype": "bf16", "mask": "causal"},
    "parallel": {"scheme": "ring", "cp": 2}, "pass": "fwd_bwd"})";
  return path;
}
} // namespace

TEST_CASE("cli: calibrate --from-raw fits recorded measurements and writes a valid profile") {
  std::string raw = write_raw(), out = tmp("h100_test.json");
  Run r = test::run_cpsim("calibrate --from-raw " + raw + " --out " + out);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("attention fwd d=64") && Contains("p2p") && Contains("not calibrated: inter_node") &&
                        Contains("wrote " + out));
  calib::Profile p = calib::load_profile(out);
  CHECK(p.name == "h100_test");
  CHECK(p.source == "from raw " + raw);
  CHECK(p.gpu_name == "NVIDIA H100 80GB HBM3");
  CHECK(p.kernel_build.source_sha256 == calib::this_build_kernels().source_sha256);
  REQUIRE(p.kernels.size() == 2);
  CHECK(p.kernels[0].tile == KernelTile{64, 64});
  CHECK(p.kernels[0].grids.at(0).tile_full_s == Approx(1.5e-6).epsilon(1e-4));
  CHECK(p.kernels[1].grids.at(0).kind == GridKind::K_PER_HEAD);
  CHECK(p.kernels[1].grids.at(0).tile_full_s == Approx(4e-6).epsilon(1e-4));
  REQUIRE(p.comms.size() == 1);
  CHECK(p.comms[0].bandwidth_bytes_per_s == Approx(280e9).epsilon(1e-6));
}

TEST_CASE("cli: calibrate --from-run rebuilds attention and merge samples from a committed run's plans") {
  // the H200 kernel sweep of 2026-12-02: its raw.json predates merge samples, its plans/ and measured/ hold them
  const std::string run = std::string(CPSIM_SOURCE_DIR) + "/results/calibration/2026-12-02_h200-sxm-1";
  const std::string out = tmp("h200_run.json");
  const std::string build = "ae6fad5043e95e75b9e3cbded1193073942fec568c492ef4f89c29be09c43a1a,12c69e4,mma";
  const std::string residuals = tmp("h200_residuals.csv");
  // those kernels compute 64 x 64 tiles (kernels/README.md); the old sweep grid alone does not tell 64 from 128 rows
  Run r = test::run_cpsim("calibrate --from-run " + run + " --out " + out + " --kernel-build " + build +
                          " --kernel-tiles 64x64 --residuals " + residuals);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("merge fwd") && Contains("merge bwd") && Contains("kernels ae6fad5043e9 (git 12c69e4, mma)"));
  const calib::Profile p = calib::load_profile(out);
  CHECK(p.gpu_name == "NVIDIA H200");
  CHECK(p.kernel_build.git_sha == "12c69e4");
  CHECK(p.kernel_build.implementation == "mma");
  REQUIRE(p.kernels.size() == 4);
  for (const auto& k : p.kernels) {
    INFO(to_string(k.dir) << " " << k.head_dim);
    CHECK(k.tile == KernelTile{64, 64});
    CHECK(k.quality.median_abs_rel_err < 0.04);
  }
  // backward: a dK/dV launch per (key tile, KV head), then a dQ launch per (query tile, head), as those kernels do
  CHECK(p.kernels[2].grids.size() == 2);
  CHECK(p.kernels[2].grids[0].kind == GridKind::K_PER_KV_HEAD);
  // one row per attention op, with the provenance line first
  std::ifstream res(residuals);
  std::string line;
  int rows = 0;
  std::getline(res, line);
  CHECK_THAT(line, Contains("# in-sample residuals") && Contains(out));
  while (std::getline(res, line))
    ++rows;
  CHECK(rows == 1 + 140);
  REQUIRE(p.merges.size() == 2);
  for (const auto& m : p.merges) {
    CHECK(m.bytes_per_s > 1e11); // a merge kernel streams at a sizeable share of HBM, not at a fitting artefact
    CHECK(m.bytes_per_s < 1e13);
    CHECK(m.launch_s < 1e-4);
  }
  CHECK(p.merges[0].quality.samples == 70); // one forward merge per kernel plan
  // backward merges: the bytes this build's generator gives them (no phantom dQ pass) fit one line
  CHECK(p.merges[1].quality.median_abs_rel_err < 0.05);
  Run wrong = test::run_cpsim("calibrate --from-run " + run + " --out " + tmp("y.json") + " --kernel-build xyz");
  CHECK(wrong.code == 2);
  CHECK_THAT(wrong.out, Contains("--kernel-build") && Contains("64 lower-case hex"));
  Run tiles = test::run_cpsim("calibrate --from-run " + run + " --out " + tmp("y.json") + " --kernel-tiles 64x64,big");
  CHECK(tiles.code == 2);
  CHECK_THAT(tiles.out, Contains("--kernel-tiles") && Contains("'big'"));
  Run missing = test::run_cpsim("calibrate --from-run " + tmp("no_such_run") + " --out " + tmp("x.json"));
  CHECK(missing.code == 2);
  CHECK_THAT(missing.out, Contains("no_such_run/raw.json"));
}

TEST_CASE("cli: calibrate and validate refuse the GPU path with exit 2 and the cause where no GPU is usable") {
  Run c = test::run_cpsim("calibrate --out " + tmp("never.json") + " --hardware h100-sxm-8");
  CHECK(c.code == 2);
  CHECK_THAT(c.out, Contains("'cpsim calibrate' runs on GPUs") && Contains("--from-raw"));
  CHECK_FALSE(std::filesystem::exists(tmp("never.json")));
  Run v = test::run_cpsim("validate " + write_scenario("v", 1024));
  CHECK(v.code == 2);
  CHECK_THAT(v.out, Contains("'cpsim validate' runs on GPUs") && Contains("--measured"));
  Run sweeps = test::run_cpsim("calibrate --out " + tmp("never.json") + " --hardware h100-sxm-8 --sweeps comm,gemm");
  CHECK(sweeps.code == 2);
  CHECK_THAT(sweeps.out, Contains("unknown group 'gemm'"));
  Run bad = test::run_cpsim("calibrate --from-raw " + tmp("missing_raw.json") + " --out " + tmp("x.json"));
  CHECK(bad.code == 2);
  CHECK_THAT(bad.out, Contains("missing_raw.json"));
}

TEST_CASE("cli: simulate --profile uses the profile and notes what lies outside its ranges") {
  std::string raw = write_raw(), prof = tmp("p_sim.json"), json = tmp("sim.json");
  REQUIRE(test::run_cpsim("calibrate --from-raw " + raw + " --out " + prof).code == 0);
  // 65536 tokens: more tiles per op than the calibration grid holds
  Run r = test::run_cpsim("simulate " + write_scenario("big", 65536) + " --profile " + prof + " --json " + json);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("cost model: profile " + prof) &&
                        Contains("calibration note: fwd attention (head_dim 64): tiles x heads") &&
                        Contains("outside the calibrated"));
  Json j = load_json_file(json);
  CHECK(j["cost_model"]["profile"] == prof);
  bool tiles_note = false;
  for (const auto& n : j["cost_model"]["notes"])
    tiles_note |= n.value("quantity", "") == "tiles x heads";
  CHECK(tiles_note);
  // without a profile the roofline answers and says so
  Run plain = test::run_cpsim("simulate " + write_scenario("big2", 65536) + " --json " + json);
  REQUIRE(plain.code == 0);
  CHECK(load_json_file(json)["cost_model"]["profile"].is_null());
  Run bad = test::run_cpsim("simulate " + write_scenario("b3", 1024) + " --profile " + raw);
  CHECK(bad.code == 2);
  CHECK_THAT(bad.out, Contains("profile '" + raw + "'") && Contains("format"));
}

TEST_CASE("cli: the profile travels in the scenario key and in plans") {
  std::string raw = write_raw(), prof = tmp("p_key.json"), plan = tmp("plan.json");
  REQUIRE(test::run_cpsim("calibrate --from-raw " + raw + " --out " + prof).code == 0);
  std::string sc = tmp("keyed.json");
  std::ofstream(sc) << R"({"name": "keyed", "hardware": "h100-sxm-8", "profile": "p_key.json",
    "workload": {"seq_lens": [2048], "heads": 4, "kv_heads": 4, "head_dim": 64, "dtype": "bf16", "mask": "causal"},
    "parallel": {"scheme": "ring", "cp": 2}, "pass": "fwd"})";
  Run r = test::run_cpsim("simulate " + sc);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("cost model: profile") && Contains("p_key.json"));
  REQUIRE(test::run_cpsim("plan " + write_scenario("planned", 2048) + " --profile " + prof + " -o " + plan).code == 0);
  CHECK(load_json_file(plan)["scenario"]["profile"].get<std::string>().find("p_key.json") != std::string::npos);
  Run s = test::run_cpsim("simulate " + plan);
  CHECK_THAT(s.out, Contains("cost model: profile"));
  Run missing =
      test::run_cpsim("plan " + write_scenario("planned2", 2048) + " --profile " + tmp("nope.json") + " -o " + plan);
  CHECK(missing.code == 2);
  Run cmp = test::run_cpsim("compare " + write_scenario("cmp", 65536) + " --profile " + prof);
  REQUIRE(cmp.code == 0);
  CHECK_THAT(cmp.out, Contains("calibration note (#1") && Contains("outside the calibrated"));
}

TEST_CASE("cli: validate --measured prints, and writes CSV, JSON and PNG with the errors of the step") {
  std::string sc = write_scenario("val", 2048), pred = tmp("pred.json"), plan = tmp("val_plan.json");
  REQUIRE(test::run_cpsim("simulate " + sc + " --json " + pred).code == 0);
  const double predicted = load_json_file(pred)["step_time_s"].get<double>();
  REQUIRE(test::run_cpsim("plan " + sc + " -o " + plan).code == 0);
  Json pj = load_json_file(plan);
  // a measured file as `cpsim run --json` writes it: every op 100 us, the step 10 ms
  Json ops = Json::array();
  for (const auto& rank : pj["schedule"]["ranks"])
    for (const auto& op : rank["ops"])
      ops.push_back({{"rank", rank["rank"]}, {"op", op["id"]}, {"label", op["label"]}, {"median_s", 1e-4}});
  std::string meas = tmp("val_measured.json"), dir = tmp("val_out");
  save_json_file(meas, Json{{"scenario", pj["scenario"]}, {"step_time_s", 0.01}, {"ops", ops}}, 1);
  Run r = test::run_cpsim("validate " + sc + " --measured " + meas + " --out-dir " + dir);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("rel_err") && Contains("step time") && Contains("attention fwd") && Contains("p95"));
  std::ifstream csv(dir + "/validation.csv");
  std::string header, step;
  std::getline(csv, header);
  std::getline(csv, step);
  CHECK(header == "scenario,level,item,rank,op,predicted_s,measured_s,rel_err");
  CHECK(step.rfind("\"val\",step,\"step\",-1,-1,", 0) == 0);
  std::istringstream fields(step.substr(step.rfind(',') + 1));
  double err = 0;
  fields >> err;
  CHECK(err == Approx((predicted - 0.01) / 0.01).epsilon(1e-5));
  CHECK(std::filesystem::file_size(dir + "/validation.png") > 1000);
  Json vj = load_json_file(dir + "/validation.json");
  CHECK(vj["summary"][0]["item"] == "step");
  // the scenarios can also come from the measured files alone
  Run alone = test::run_cpsim("validate --measured " + meas + " --out-dir " + dir);
  CHECK(alone.code == 0);
  // --no-plot (a GPU machine without matplotlib) writes the CSV and JSON and says how to draw the PNG
  const std::string bare = tmp("val_noplot");
  Run np = test::run_cpsim("validate --measured " + meas + " --out-dir " + bare + " --no-plot");
  CHECK(np.code == 0);
  CHECK_THAT(np.out, Contains("no PNG (--no-plot)"));
  CHECK(std::filesystem::exists(bare + "/validation.csv"));
  CHECK_FALSE(std::filesystem::exists(bare + "/validation.png"));
  // a file measured from another plan (here: one whose last backward op had another name) is refused against
  // today's plan, and paired exactly when it carries the plan that ran, as validate writes it on GPUs
  Json older = pj["schedule"], older_ops = Json::array();
  for (auto& rank : older["ranks"])
    for (auto& op : rank["ops"]) {
      if (op["label"] == "bwd dq cast")
        op["label"] = "bwd dq cast of an older plan";
      older_ops.push_back({{"rank", rank["rank"]}, {"op", op["id"]}, {"label", op["label"]}, {"median_s", 1e-4}});
    }
  const std::string old_meas = tmp("val_old.json");
  save_json_file(old_meas, Json{{"scenario", pj["scenario"]}, {"step_time_s", 0.01}, {"ops", older_ops}}, 1);
  Run refused = test::run_cpsim("validate --measured " + old_meas + " --out-dir " + bare + " --no-plot");
  CHECK(refused.code == 2);
  CHECK_THAT(refused.out, Contains("bwd dq cast of an older plan"));
  save_json_file(old_meas,
                 Json{{"scenario", pj["scenario"]}, {"step_time_s", 0.01}, {"ops", older_ops}, {"schedule", older}},
                 1);
  Run stored = test::run_cpsim("validate --measured " + old_meas + " --out-dir " + bare + " --no-plot");
  INFO(stored.out);
  CHECK(stored.code == 0);
  std::ifstream stored_csv(bare + "/validation.csv");
  const std::string all((std::istreambuf_iterator<char>(stored_csv)), std::istreambuf_iterator<char>());
  CHECK_THAT(all, Contains("bwd dq cast of an older plan"));
  Run unpaired =
      test::run_cpsim("validate " + write_scenario("other", 2048) + " --measured " + meas + " --out-dir " + dir);
  CHECK(unpaired.code == 2);
  CHECK_THAT(unpaired.out, Contains("no --measured file measures it"));
}
