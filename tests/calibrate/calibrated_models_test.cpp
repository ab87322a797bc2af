// The calibrated models: closed forms on ops whose tiles and CTAs are counted by hand, and the
// notes that say where a prediction leaves the calibrated ranges or falls back to the roofline.
#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/calibrate/kernel_features.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/simulator/analytic_engine.hpp"
#include "profile_factory.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
Op full_op(int64_t q, int64_t k, int heads, int64_t full, int64_t partial, Direction dir = Direction::FORWARD) {
  Op op;
  op.kind = OpKind::ATTENTION;
  op.dir = dir;
  op.head_begin = 0;
  op.head_end = heads;
  op.segments = {{0, {0, q}, {0, k}}};
  op.tiles = {full, partial};
  return op;
}

bool has_line(const RangeNotes& n, const std::string& a, const std::string& b = "") {
  for (const auto& l : n.lines())
    if (l.find(a) != std::string::npos && l.find(b) != std::string::npos)
      return true;
  return false;
}
} // namespace

TEST_CASE("calibrate::kernel model: CTAs, waves and tiles by hand") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, {{"kind", "full"}}, "fwd", 4, 4, 64));
  Profile p = test::test_profile();
  RangeNotes notes;
  CalibratedKernelModel m(p, sc.cluster.gpu, sc.workload, 128, 128, notes);
  // 256 x 256 full, 4 heads: 2 query tiles x 4 heads = 8 CTAs (one wave of 264 slots), 4 tiles x 4 heads = 16 tiles
  Op op = full_op(256, 256, 4, 4, 0);
  const KernelFit& f = p.kernels[0];
  double compute = 1 * (f.cta_s + 16 * f.tile_full_s / 8);
  double bytes = (2.0 * 256 * 4 + 2.0 * 256 * 4) * 64 * 2;
  CHECK(m.attention_s(op) == Approx(f.launch_s + std::max(compute, bytes / f.hbm_bytes_per_s)));
  // 300 query tiles x 4 heads = 1200 CTAs over 132 SMs x 2 = 264 slots: 5 waves (the last one partial)
  Op big = full_op(300 * 128, 128, 4, 300, 0);
  KernelFeatures x = kernel_features(big, sc.workload, 128, 128);
  CHECK(x.ctas == 1200);
  CHECK(kernel_waves(x.ctas, 132, 2) == 5);
  double big_bytes = (2.0 * 38400 * 4 + 2.0 * 128 * 4) * 64 * 2;
  CHECK(m.attention_s(big) ==
        Approx(f.launch_s + std::max(5 * (f.cta_s + 1200 * f.tile_full_s / 1200), big_bytes / f.hbm_bytes_per_s)));
  // backward launches one CTA per key tile
  Op bwd = full_op(128, 512, 4, 4, 0, Direction::BACKWARD);
  CHECK(kernel_features(bwd, sc.workload, 128, 128).ctas == 16);
  CHECK(notes.empty());
}

TEST_CASE("calibrate::kernel model: out-of-range inputs and missing families are noted") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, {{"kind", "full"}}, "fwd", 4, 4, 96));
  Profile p = test::test_profile();
  p.kernels.pop_back(); // no backward family
  p.kernels[0].tiles = {1, 100};
  RangeNotes notes;
  CalibratedKernelModel m(p, sc.cluster.gpu, sc.workload, 128, 128, notes);
  Op big = full_op(128 * 64, 128, 4, 64, 0);
  double scaled = m.attention_s(big);
  CHECK(
      has_line(notes, "fwd attention (head_dim 96)", "tiles x heads 256..256 outside the calibrated [1, 100] (1 ops)"));
  CHECK(has_line(notes, "head_dim not calibrated, tile times scaled from head_dim 64"));
  // tile times scale with head_dim: 96 / 64
  KernelFit f = p.kernels[0];
  double bytes = (2.0 * 8192 * 4 + 2.0 * 128 * 4) * 96 * 2;
  CHECK(scaled ==
        Approx(f.launch_s + std::max(1 * (f.cta_s + 256 * f.tile_full_s * 1.5 / 256), bytes / f.hbm_bytes_per_s)));
  m.attention_s(full_op(128, 128, 4, 1, 0, Direction::BACKWARD));
  CHECK(has_line(notes, "bwd attention (head_dim 96): not calibrated in the profile, roofline used"));
  Json j = notes.to_json();
  CHECK(j.size() == 3);
}

TEST_CASE("calibrate::kernel model: merges by their fit per direction, the roofline (noted) without one") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, {{"kind", "full"}}, "fwd", 4, 4, 64));
  Profile p = test::test_profile();
  p.merges = {{Direction::FORWARD, 7e-6, 1e12, {1e3, 1e7}, {10, 0.01, 0.02}}};
  RangeNotes notes;
  CalibratedKernelModel m(p, sc.cluster.gpu, sc.workload, 128, 128, notes);
  Op merge;
  merge.kind = OpKind::MERGE;
  merge.dir = Direction::FORWARD;
  merge.head_end = 4;
  merge.rows = 1024;
  merge.inputs = 2;
  // 1024 rows x 4 heads x (64 x (2 + 8) + 12) bytes, one merged partial
  const double bytes = 1024.0 * 4 * (64 * 10 + 12);
  CHECK(merge_traffic_bytes(merge, sc.workload) == bytes);
  CHECK(m.merge_s(merge) == Approx(7e-6 + bytes / 1e12));
  CHECK(notes.empty());
  merge.rows = 1 << 20; // beyond the bytes the fit saw
  m.merge_s(merge);
  CHECK(has_line(notes, "merge fwd", "bytes"));
  Op back = merge;
  back.dir = Direction::BACKWARD;
  back.bytes = 1 << 20;
  RooflineKernelModel roof(sc.cluster.gpu, sc.workload, 128, 128);
  CHECK(m.merge_s(back) == roof.merge_s(back));
  CHECK(has_line(notes, "merge bwd ops: not calibrated in the profile, roofline used"));
}

TEST_CASE("calibrate::comm model: calibrated p2p and all_to_all, roofline fallback noted") {
  Json js = test::scenario_json("ulysses", 2, {64}, {{"kind", "full"}});
  js["hardware"] = "dgx-h100:2";
  Scenario sc = test::make_scenario(js);
  Profile p = test::test_profile();
  RangeNotes notes;
  std::vector<int> place{0, 1, 8};
  CalibratedCommModel m(p, sc.cluster, place, notes);
  CHECK(m.p2p_s(0, 1, 1 << 20) == Approx(8e-6 + double(1 << 20) / 300e9));
  CHECK(notes.empty());
  // all_to_all of 4 MiB per rank over 2 ranks: one step, half the buffer leaves
  CHECK(m.collective_s(CollectiveKind::ALL_TO_ALL, {0, 1}, 4 << 20) == Approx(10e-6 + double(2 << 20) / 200e9));
  CommCostModel roof(sc.cluster, place);
  CHECK(m.p2p_s(0, 2, 1 << 20) == Approx(roof.p2p_s(0, 2, 1 << 20)));
  CHECK(has_line(notes, "p2p over inter_node: not calibrated in the profile, roofline used"));
  m.p2p_s(0, 1, 100);
  CHECK(has_line(notes, "p2p over intra_node", "bytes 100..100 outside the calibrated [1024, 1.074e+09]"));
}

TEST_CASE("calibrate::make_cost_models: a profile drives the analytic engine; notes on hardware mismatch") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 2, {1024}, {{"kind", "causal"}}, "fwd", 4, 4, 64));
  Schedule s = generate_schedule(sc);
  auto roof = make_cost_models("", sc.cluster, sc.workload, s);
  CHECK(roof.profile == nullptr);
  CHECK(roof.to_json()["profile"].is_null());
  const std::string path = "calib_test_profile.json";
  Profile p = test::test_profile();
  p.hardware_gpu = "NVIDIA H200";
  save_json_file(path, profile_to_json(p), 2);
  auto cal = make_cost_models(path, sc.cluster, sc.workload, s);
  REQUIRE(cal.profile != nullptr);
  SimResult r = run_analytic(s, sc.workload, *cal.kernels, *cal.comm);
  SimResult r0 = run_analytic(s, sc.workload, *roof.kernels, *roof.comm);
  CHECK(r.step_time_s != Approx(r0.step_time_s));
  CHECK(has_line(*cal.notes, "profile measured on", "but the scenario's GPU is 'NVIDIA H100 80GB HBM3'"));
  CHECK(cal.to_json()["notes"].size() >= 1);
  std::filesystem::remove(path);
}
