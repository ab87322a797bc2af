// The whole CPU half of `cpsim calibrate` on the real sweep grid: every plan of the quick sweeps
// is "measured" by a known profile (the models' closed forms standing in for the GPU), the probes
// turn the per-op medians into samples, the raw file round-trips, and the fit gives the profile
// back. This is what a GPU run does, minus the GPU.
#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/calibrate/fit.hpp"
#include "cpsim/calibrate/sweeps.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "profile_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
/** What `cpsim run --json` would report if the GPU behaved exactly like `truth`. */
Json fake_measured(const CalibrationPlan& p, const Profile& truth, const ClusterSpec& c) {
  RangeNotes notes;
  CalibratedKernelModel k(truth, c.gpu, p.scenario.workload, p.schedule.tile_m, p.schedule.tile_n, notes);
  CalibratedCommModel m(truth, c, p.schedule.placement, notes);
  Json ops = Json::array();
  for (const auto& rank : p.schedule.ranks)
    for (const auto& op : rank.ops) {
      double t = 0;
      switch (op.kind) {
      case OpKind::ATTENTION:
        t = k.attention_s(op);
        break;
      case OpKind::MERGE:
        t = k.merge_s(op);
        break;
      case OpKind::SEND:
        t = m.p2p_s(rank.rank, op.peer, op.bytes);
        break;
      case OpKind::RECV:
        t = m.p2p_s(op.peer, rank.rank, op.bytes);
        break;
      case OpKind::COLLECTIVE:
        t = m.collective_s(op.coll, op.coll_group, op.bytes);
        break;
      }
      // the overlap plan's second attention and exchange run beside each other
      if (op.label == "attn beside traffic")
        t *= truth.overlap.compute_slowdown;
      if (op.label == "send beside attn" || op.label == "recv beside attn")
        t *= truth.overlap.comm_slowdown;
      ops.push_back({{"rank", rank.rank}, {"op", op.id}, {"median_s", t}});
    }
  return {{"ops", ops}};
}
} // namespace

TEST_CASE("calibrate: sweep plans -> measured medians -> raw file -> fit recovers the profile") {
  const ClusterSpec c = cluster_from_json(builtin_hardware("h100-sxm-8"), "h100-sxm-8");
  Profile truth = test::test_profile();
  truth.kernels = {test::kernel_fit(Direction::FORWARD, 128), test::kernel_fit(Direction::BACKWARD, 128)};
  truth.kernels[1].grids[0].tile_full_s = 5e-6;
  truth.kernels[1].grids[0].tile_partial_s = 6e-6;
  truth.kernels[1].grids[1].ctas_per_sm = 1;
  for (auto& k : truth.kernels)
    k.hbm_bytes_per_s = c.gpu.hbm_bytes_per_s;
  truth.comms = {test::comm_fit("p2p", 8e-6, 300e9), test::comm_fit("all_gather", 10e-6, 250e9),
                 test::comm_fit("all_to_all", 12e-6, 200e9)};
  truth.overlap = {1.15, 1.05, 0};

  RawMeasurements raw;
  raw.gpu_name = truth.gpu_name;
  raw.sm_count = truth.sm_count;
  raw.hardware = "h100-sxm-8";
  raw.hardware_gpu = c.gpu.name;
  raw.gpus = 2;
  for (const auto& p : calibration_plans(c, {2, true})) {
    if (p.sweep == "reduce_scatter")
      continue; // the backend refuses these; calibrate lists them as not calibrated
    add_samples(p, fake_measured(p, truth, c), raw);
  }
  CHECK(raw.kernels.size() == 24);
  CHECK(raw.comms.size() == 18);
  CHECK(raw.overlaps.size() == 2);
  RawMeasurements back = raw_from_json(raw_to_json(raw), "raw");

  Profile fit = fit_profile(back, c.gpu.hbm_bytes_per_s);
  REQUIRE(fit.kernels.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    INFO("kernel family " << i);
    const KernelFit &f = fit.kernels[i], &t = truth.kernels[i];
    CHECK(f.dir == t.dir);
    CHECK(f.tile == t.tile);
    CHECK(f.alone_fraction == Approx(t.alone_fraction));
    REQUIRE(f.grids.size() == t.grids.size());
    for (size_t g = 0; g < f.grids.size(); ++g) {
      CHECK(f.grids[g].kind == t.grids[g].kind);
      CHECK(f.grids[g].ctas_per_sm == t.grids[g].ctas_per_sm);
      CHECK(f.grids[g].tile_full_s == Approx(t.grids[g].tile_full_s).epsilon(1e-3));
    }
    CHECK(f.launch_s == Approx(t.launch_s).epsilon(1e-2));
    CHECK(f.quality.p95_abs_rel_err < 1e-5);
  }
  REQUIRE(fit.comms.size() == 3);
  for (const auto& f : fit.comms) {
    INFO(f.op);
    const CommFit* t = nullptr;
    for (const auto& x : truth.comms)
      if (x.op == f.op)
        t = &x;
    REQUIRE(t);
    CHECK(f.latency_s == Approx(t->latency_s).epsilon(1e-3));
    CHECK(f.bandwidth_bytes_per_s == Approx(t->bandwidth_bytes_per_s).epsilon(1e-4));
  }
  REQUIRE(fit.has_overlap);
  CHECK(fit.overlap.compute_slowdown == Approx(1.15));
  CHECK(fit.overlap.comm_slowdown == Approx(1.05));
}
