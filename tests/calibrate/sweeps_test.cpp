// The calibration plans are ordinary schedule IR: valid, accepted by the backend's CPU checks
// (make_exec_plan) except where the backend states it cannot execute an op kind, and their probes
// turn a measured result's per-op medians into samples.
#include "cpsim/calibrate/predict.hpp"
#include "cpsim/calibrate/sweeps.hpp"
#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"

#include <catch2/catch.hpp>

#include <set>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
ClusterSpec h100() {
  return cluster_from_json(builtin_hardware("h100-sxm-8"), "h100-sxm-8");
}
} // namespace

TEST_CASE("calibrate::comm_sizes: 1 KiB to 1 GiB") {
  auto full = comm_sizes(false);
  CHECK(full.front() == 1024);
  CHECK(full.back() == int64_t(1) << 30);
  CHECK(full.size() == 11);
  auto quick = comm_sizes(true);
  CHECK(quick.size() == 6);
  CHECK(quick.back() == int64_t(1) << 30);
}

TEST_CASE("calibrate::calibration_plans: one GPU gives kernel plans only, each one fwd and one bwd kernel") {
  auto plans = calibration_plans(h100(), {1, true});
  REQUIRE(plans.size() == 12);
  for (const auto& p : plans) {
    CHECK(p.sweep == "kernel");
    REQUIRE(p.kernels.size() == 2);
    CHECK(p.kernels[0].sample.op.dir == Direction::FORWARD);
    CHECK(p.kernels[1].sample.op.dir == Direction::BACKWARD);
    CHECK(p.kernels[0].sample.workload.seq_lens == p.scenario.workload.seq_lens);
    CHECK_NOTHROW(backend::make_exec_plan(p.schedule, p.scenario.workload));
  }
  // the block-sparse layout with 64-token blocks leaves partly masked 128x128 tiles of the schedule
  bool partial = false;
  for (const auto& p : plans)
    partial |= p.kernels[0].sample.op.tiles.partial > 0 && p.kernels[0].sample.mask == "block_sparse";
  CHECK(partial);
}

TEST_CASE("calibrate::kernel_sweep_shapes: every term of the kernel model has samples that move it") {
  const auto shapes = kernel_sweep_shapes();
  std::set<int> dims, gqa;
  std::set<int64_t> windows, odd, one_wave_heads;
  bool equal_tiles = false, long_keys = false, short_kernel = false;
  int sparse = 0;
  for (const auto& k : shapes) {
    dims.insert(k.head_dim);
    gqa.insert(k.heads / k.kv_heads);
    const std::string kind = k.mask.at("kind").get<std::string>();
    if (kind == "sliding_window")
      windows.insert(k.mask.at("window").get<int64_t>());
    if (kind == "block_sparse")
      ++sparse;
    if ((k.seq / 64) % 2 == 1)
      odd.insert(k.seq);
    // fewer CTAs of 64 query rows than SMs: lone CTAs
    if (k.seq / 64 * k.heads < 132)
      one_wave_heads.insert(k.heads);
    long_keys = long_keys || k.seq >= 65536;
    short_kernel = short_kernel || k.seq <= 576;
    // a full square and a causal one with the same number of 64 x 64 tiles
    if (kind == "causal")
      for (const auto& f : shapes) {
        const int64_t n = k.seq / 64, m = f.seq / 64;
        equal_tiles = equal_tiles || (f.mask.at("kind") == "full" && f.head_dim == k.head_dim && f.heads == k.heads &&
                                      n * (n + 1) / 2 - m * m <= 1 && m * m - n * (n + 1) / 2 <= 1);
      }
  }
  CHECK(dims == std::set<int>{64, 128});
  CHECK(gqa.count(1));
  CHECK(gqa.count(4));
  CHECK(gqa.count(8));
  for (int64_t w : windows)
    CHECK(w % 64 != 0);
  CHECK(windows.size() >= 4);
  CHECK(odd.size() >= 2);
  CHECK(one_wave_heads.size() >= 2);
  CHECK(sparse >= 4);
  CHECK(equal_tiles);
  CHECK(long_keys);
  CHECK(short_kernel);
}

TEST_CASE("calibrate::calibration_plans: communication and overlap on two GPUs pass the backend's checks") {
  auto plans = calibration_plans(h100(), {2, true});
  std::set<std::string> sweeps;
  for (const auto& p : plans) {
    if (p.sweep == "kernel")
      continue;
    sweeps.insert(p.sweep);
    CHECK_NOTHROW(backend::make_exec_plan(p.schedule, p.scenario.workload)); // reduce_scatter too, since 2026-11-28
    if (p.sweep != "overlap") {
      REQUIRE(p.comms.size() == 6);
      CHECK(p.comms.front().sample.bytes == 1024);
      CHECK(p.comms.back().sample.bytes == int64_t(1) << 30);
    }
  }
  CHECK(sweeps == std::set<std::string>{"p2p", "all_gather", "reduce_scatter", "all_to_all", "overlap"});
}

TEST_CASE("calibrate::add_samples: the slowest op of a probe's set is the sample; a missing op is named") {
  auto plans = calibration_plans(h100(), {2, true});
  const CalibrationPlan* p2p = nullptr;
  const CalibrationPlan* ov = nullptr;
  for (const auto& p : plans) {
    if (p.sweep == "p2p")
      p2p = &p;
    if (p.sweep == "overlap" && !ov)
      ov = &p;
  }
  REQUIRE(p2p);
  REQUIRE(ov);
  Json ops = Json::array();
  for (const auto& pr : p2p->comms) // send on rank 0 takes 1 us less than the matching receive on rank 1
    for (const auto& [rank, op] : pr.ops)
      ops.push_back(
          {{"rank", rank}, {"op", op}, {"median_s", double(pr.sample.bytes) / 1e11 + (rank == 1 ? 1e-6 : 0)}});
  RawMeasurements raw;
  add_samples(*p2p, Json{{"ops", ops}}, raw);
  REQUIRE(raw.comms.size() == 6);
  CHECK(raw.comms[0].measured_s == Approx(1024 / 1e11 + 1e-6));
  CHECK(raw.comms[0].link == "intra_node");
  ops.erase(ops.size() - 1);
  CHECK_THROWS_WITH(add_samples(*p2p, Json{{"ops", ops}}, raw),
                    Catch::Contains("p2p_intra_node") && Catch::Contains("rank 1"));

  Json ov_ops = Json::array();
  const auto& pr = ov->overlaps.at(0);
  auto put = [&](const OpSet& set, double t) {
    for (const auto& [rank, op] : set)
      ov_ops.push_back({{"rank", rank}, {"op", op}, {"median_s", t + 1e-5 * rank}});
  };
  put(pr.compute_alone, 1e-3);
  put(pr.compute_overlapped, 1.2e-3);
  put(pr.comm_alone, 2e-3);
  put(pr.comm_overlapped, 2.5e-3);
  add_samples(*ov, Json{{"ops", ov_ops}}, raw);
  REQUIRE(raw.overlaps.size() == 1);
  CHECK(raw.overlaps[0].compute_alone_s == Approx(1.01e-3));
  CHECK(raw.overlaps[0].comm_overlapped_s == Approx(2.51e-3));
}

TEST_CASE("calibrate::select_sweeps: groups by name; an unknown one is named") {
  SweepOptions o;
  o.gpus = 2;
  o.quick = true;
  select_sweeps(o, "comm");
  auto plans = calibration_plans(h100(), o);
  for (const auto& p : plans)
    CHECK((p.sweep != "kernel" && p.sweep != "overlap"));
  CHECK(plans.size() == 4); // p2p, all_gather, reduce_scatter, all_to_all over 2 GPUs
  select_sweeps(o, "kernel,overlap");
  CHECK((o.kernel && o.overlap && !o.comm));
  CHECK_THROWS_WITH(select_sweeps(o, "kernel,gemm"), Catch::Contains("--sweeps") && Catch::Contains("'gemm'"));
}

TEST_CASE("calibrate::calibration_plans: the one-GPU kernel sweep fits a lent machine's call") {
  // Predicted by the committed H200 profile (kernels of 2026-12-02): every plan runs 2 + 5 times (session_1gpu.sh)
  // and costs about 1 s more for its process and CUDA start (118 s measured for the 70 plans of 2026-12-02, 46 s of
  // which in kernels). The sweep must stay under 200 s so that calibration and two validations fit one 8-minute call.
  const ClusterSpec c = cluster_from_json(builtin_hardware("h200-sxm-1"), "h200-sxm-1");
  const std::string profile = std::string(CPSIM_SOURCE_DIR) + "/hardware/profiles/h200-sxm-1.json";
  double total_s = 0;
  int plans = 0;
  for (const auto& p : calibration_plans(c, {1, false})) {
    const CostModels m = make_cost_models(profile, c, p.scenario.workload, p.schedule);
    total_s += 7 * predict(p.schedule, p.scenario.workload, m).step_time_s + 1.0;
    ++plans;
  }
  INFO(plans << " plans, " << total_s << " s");
  CHECK(plans == 89);
  CHECK(total_s < 200);
  CHECK(total_s > 60); // a sweep too short to identify anything would pass the first check too
}
