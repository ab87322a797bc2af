// The calibrated models: closed forms on ops whose CTAs, tiles and SM schedule are worked out by hand, and the
// notes that say where a prediction leaves the calibrated ranges, falls back to the roofline, or uses a profile of
// other kernels.
#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/calibrate/kernel_model.hpp"
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

TEST_CASE("calibrate::kernel model: CTAs, SM schedule and tiles by hand") {
  // 4 query heads over 2 KV heads, head_dim 64; the profile's kernels: 64 x 64 tiles, 2 CTAs per SM (132 SMs), a
  // lone CTA takes 0.7 of its time on a full SM; forward CTA 1 us + 2 us per full tile
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, {{"kind", "full"}}, "fwd", 4, 2, 64));
  Profile p = test::test_profile();
  RangeNotes notes;
  CalibratedKernelModel m(p, sc.cluster.gpu, sc.workload, 128, 128, notes);
  const KernelFit& f = p.kernels[0];
  // 256 x 256 full: 4 query tiles x 4 heads = 16 CTAs of 4 tiles (1 + 8 us), each alone on its SM: 0.7 x 9 us
  CHECK(m.attention_s(full_op(256, 256, 4, 0, 0)) == Approx(f.launch_s + 0.7 * 9e-6));
  // 19200 x 64 full: 300 x 4 = 1200 CTAs of one tile (3 us) on 264 slots: four full rounds (12 us), then 144 CTAs
  // start at once; SMs 0..11 hold two of them (3 us more), the other SMs one, which runs at 1/0.7 the rate
  Op big = full_op(19200, 64, 4, 0, 0);
  MaskGeometry geo(sc.workload);
  const KernelShape x = kernel_shape(big, sc.workload, geo, {64, 64}, {GridKind::Q_PER_HEAD});
  CHECK(x.ctas == 1200);
  CHECK(x.tiles == 1200);
  const double big_bytes = (2.0 * 19200 * 4 + 2.0 * 64 * 2) * 64 * 2;
  CHECK(big_bytes / f.hbm_bytes_per_s < 15e-6);
  CHECK(m.attention_s(big) == Approx(f.launch_s + 15e-6));
  // backward, 128 queries x 512 keys: a dK/dV CTA per (key tile, KV head) walks 2 heads x 2 query tiles
  // (1 + 2 x 0.5 + 4 x 2 = 10 us), 16 of them alone: 7 us; then a dQ CTA per (query tile, head) of 8 tiles
  // (1 + 8 x 1.5 = 13 us), 8 of them alone: 9.1 us
  const Op bwd = full_op(128, 512, 4, 0, 0, Direction::BACKWARD);
  const KernelShape xb =
      kernel_shape(bwd, sc.workload, geo, {64, 64}, {GridKind::K_PER_KV_HEAD, GridKind::Q_PER_HEAD});
  CHECK(xb.grids[0].size() == 1);
  CHECK(xb.grids[0][0].count == 16);
  CHECK(xb.grids[0][0].heads == 2);
  CHECK(m.attention_s(bwd) == Approx(p.kernels[1].launch_s + 7e-6 + 9.1e-6));
  CHECK(notes.empty());
}

TEST_CASE("calibrate::kernel model: partly masked tiles cost their own time plus their visible share") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {128}, {{"kind", "causal"}}, "fwd", 1, 1, 64));
  Profile p = test::test_profile();
  RangeNotes notes;
  CalibratedKernelModel m(p, sc.cluster.gpu, sc.workload, 128, 128, notes);
  const GridFit& g = p.kernels[0].grids[0];
  // causal 128 x 128, one head: query tile 1 holds a full tile and the diagonal; both CTAs alone on their SMs, the
  // longer one sets the time
  const double diagonal = g.tile_partial_s + g.partial_visible_s * (64.0 * 65 / 2) / 4096;
  CHECK(m.attention_s(full_op(128, 128, 1, 0, 0)) ==
        Approx(p.kernels[0].launch_s + 0.7 * (g.cta_s + g.tile_full_s + diagonal)));
}

TEST_CASE("calibrate::kernel model: out-of-range inputs and missing families are noted") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, {{"kind", "full"}}, "fwd", 4, 4, 96));
  Profile p = test::test_profile();
  p.kernels.pop_back(); // no backward family
  p.kernels[0].tiles = {1, 100};
  RangeNotes notes;
  CalibratedKernelModel m(p, sc.cluster.gpu, sc.workload, 128, 128, notes);
  // 8192 x 128, 4 heads: 512 CTAs of 2 tiles, tile times scaled by 96 / 64: 1 + 2 x 3 = 7 us each. 264 start at 0
  // and end at 7 us; the other 248 then fill SMs 0..115 twice (to 14 us) and the rest once (7 + 0.7 x 7)
  Op big = full_op(8192, 128, 4, 0, 0);
  const double t = m.attention_s(big);
  CHECK(t == Approx(p.kernels[0].launch_s + 14e-6));
  CHECK(has_line(notes, "fwd attention (head_dim 96)",
                 "tiles x heads 1024..1024 outside the calibrated [1, 100] (1 ops)"));
  CHECK(has_line(notes, "head_dim not calibrated, tile times scaled from head_dim 64"));
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
  // the profile's kernels are not this tree's: said, with both identities
  CHECK(has_line(*cal.notes, "profile measured kernels aaaaaaaaaaaa (git abc1234)",
                 "this tree's kernel sources differ (" + describe(this_build_kernels()) + ")"));
  p.kernel_build = this_build_kernels();
  save_json_file(path, profile_to_json(p), 2);
  CHECK(!has_line(*make_cost_models(path, sc.cluster, sc.workload, s).notes, "kernels"));
  p.kernel_build = {};
  save_json_file(path, profile_to_json(p), 2);
  CHECK(has_line(*make_cost_models(path, sc.cluster, sc.workload, s).notes, "kernels are of unknown sources"));
  CHECK(cal.to_json()["notes"].size() >= 1);
  std::filesystem::remove(path);
}
