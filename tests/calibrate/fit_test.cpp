// The fits recover known parameters: measurements are synthesised from a KernelFit / CommFit with
// the models' own closed forms, exactly (the fit must reproduce them) and with 1 % noise (within
// tolerance), including memory-bound ops, wave quantisation and NCCL-like size effects.
#include "cpsim/calibrate/fit.hpp"
#include "profile_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
constexpr int kSms = 132;

/** A grid of op shapes: small grids (waves < 1), many waves, masked fractions, some memory-heavy. */
std::vector<KernelSample> synth_kernels(const KernelFit& truth, double noise, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01(0, 1);
  std::vector<KernelSample> out;
  for (int64_t ctas : {8, 64, 132, 200, 264, 400, 1000, 5000, 20000})
    for (int64_t per_cta : {1, 4, 16, 64})
      for (double partial : {0.0, 0.1, 0.5}) {
        KernelSample s;
        s.plan = "synthetic";
        s.mask = "causal";
        s.x.dir = truth.dir;
        s.x.head_dim = truth.head_dim;
        s.x.ctas = ctas;
        int64_t tiles = ctas * per_cta;
        s.x.partial_tiles = int64_t(double(tiles) * partial);
        s.x.full_tiles = tiles - s.x.partial_tiles;
        s.x.tokens = ctas * 128;
        // ordinary ops move little; one shape in nine moves so much that HBM decides
        s.x.bytes = (ctas % 3 == 0 && per_cta == 1) ? double(tiles) * 1e7 : double(tiles) * 1e4;
        s.measured_s = kernel_time_s(truth, s.x, kSms) * (1 + noise * n01(rng));
        out.push_back(s);
      }
  return out;
}

KernelFit truth_kernel() {
  KernelFit t = test::kernel_fit(Direction::FORWARD, 128);
  t.hbm_bytes_per_s = 2e12;
  return t;
}
} // namespace

TEST_CASE("calibrate::fit_kernels: exact synthetic measurements give back the parameters") {
  const KernelFit truth = truth_kernel();
  auto fits = fit_kernels(synth_kernels(truth, 0, 1), kSms, 3.35e12);
  REQUIRE(fits.size() == 1);
  const KernelFit& f = fits[0];
  CHECK(f.dir == Direction::FORWARD);
  CHECK(f.head_dim == 128);
  CHECK(f.ctas_per_sm == truth.ctas_per_sm);
  CHECK(f.launch_s == Approx(truth.launch_s).epsilon(1e-6));
  CHECK(f.cta_s == Approx(truth.cta_s).epsilon(1e-6));
  CHECK(f.tile_full_s == Approx(truth.tile_full_s).epsilon(1e-6));
  CHECK(f.tile_partial_s == Approx(truth.tile_partial_s).epsilon(1e-6));
  CHECK(f.hbm_source == "fit");
  CHECK(f.hbm_bytes_per_s == Approx(truth.hbm_bytes_per_s).epsilon(1e-6));
  CHECK(f.quality.median_abs_rel_err < 1e-9);
  CHECK(f.tiles.min == 8);
  CHECK(f.tiles.max == 20000 * 64);
  CHECK(f.partial_fraction.max == Approx(0.5).epsilon(1e-3));
}

TEST_CASE("calibrate::fit_kernels: 1 % noise is recovered within tolerance") {
  const KernelFit truth = truth_kernel();
  auto fits = fit_kernels(synth_kernels(truth, 0.01, 7), kSms, 3.35e12);
  REQUIRE(fits.size() == 1);
  const KernelFit& f = fits[0];
  CHECK(f.ctas_per_sm == truth.ctas_per_sm);
  CHECK(f.tile_full_s == Approx(truth.tile_full_s).epsilon(0.03));
  CHECK(f.tile_partial_s == Approx(truth.tile_partial_s).epsilon(0.05));
  CHECK(f.launch_s == Approx(truth.launch_s).epsilon(0.15));
  CHECK(f.cta_s == Approx(truth.cta_s).epsilon(0.15));
  CHECK(f.hbm_bytes_per_s == Approx(truth.hbm_bytes_per_s).epsilon(0.03));
  CHECK(f.quality.median_abs_rel_err < 0.015);
}

TEST_CASE(
    "calibrate::fit_kernels: no memory-bound op keeps the data sheet's HBM; no partial tile reuses the full tile") {
  KernelFit truth = truth_kernel();
  std::vector<KernelSample> ss;
  for (auto s : synth_kernels(truth, 0, 3))
    if (s.x.bytes < 1e9 && s.x.partial_tiles == 0)
      ss.push_back(s);
  auto f = fit_kernels(ss, kSms, 3.35e12).at(0);
  CHECK(f.hbm_source == "spec");
  CHECK(f.hbm_bytes_per_s == 3.35e12);
  CHECK(f.tile_partial_s == f.tile_full_s);
  CHECK(f.partial_fraction.max == 0);
}

namespace {
/** Samples the model cannot express: one-wave grids whose longest CTA, not the mean one, sets the time. */
std::vector<KernelSample> with_misfits(std::vector<KernelSample> ss, double slow) {
  for (auto& s : ss)
    if (s.x.ctas <= 64 && s.x.bytes < 1e9)
      s.measured_s *= slow;
  return ss;
}
} // namespace

TEST_CASE("calibrate::fit_kernels: samples far off the model do not pull the per-tile time of the others") {
  const KernelFit truth = truth_kernel();
  // 16 of 108 samples measured 40 % slower than the closed form: equal weights would shift every parameter
  const auto ss = with_misfits(synth_kernels(truth, 0.005, 11), 1.4);
  const KernelFit f = fit_kernels(ss, kSms, 3.35e12).at(0);
  CHECK(f.tile_full_s == Approx(truth.tile_full_s).epsilon(0.02));
  CHECK(f.tile_partial_s == Approx(truth.tile_partial_s).epsilon(0.04));
  // the shapes the model does express are predicted as well as their noise allows
  std::vector<double> err;
  for (const auto& s : ss)
    if (s.x.ctas > 64)
      err.push_back(std::abs(kernel_time_s(f, s.x, kSms) / s.measured_s - 1));
  std::sort(err.begin(), err.end());
  CHECK(err[err.size() / 2] < 0.01);
}

TEST_CASE("calibrate::fit_kernels: a 'bandwidth' far below the data sheet is not taken for HBM") {
  // no op is memory-bound, but the one-wave grids run 3x slower than the compute model says: read as memory
  // time they would imply an HBM of a few GB/s and price every small op at it
  KernelFit truth = truth_kernel();
  std::vector<KernelSample> ss;
  for (auto s : synth_kernels(truth, 0, 3))
    if (s.x.bytes < 1e9) {
      s.x.bytes /= 10; // the traffic of flash attention's inputs: reading it at full HBM speed takes no time here
      ss.push_back(s);
    }
  ss = with_misfits(ss, 3.0);
  const KernelFit f = fit_kernels(ss, kSms, 3.35e12).at(0);
  CHECK(f.hbm_source == "spec");
  CHECK(f.hbm_bytes_per_s == 3.35e12);
}

TEST_CASE("calibrate::fit_kernels: families split by direction and head_dim; too few shapes is a named error") {
  std::vector<KernelSample> ss = synth_kernels(truth_kernel(), 0, 1);
  KernelFit bwd = truth_kernel();
  bwd.dir = Direction::BACKWARD;
  bwd.head_dim = 64;
  for (auto s : synth_kernels(bwd, 0, 2))
    ss.push_back(s);
  auto fits = fit_kernels(ss, kSms, 3.35e12);
  REQUIRE(fits.size() == 2);
  std::vector<KernelSample> few(ss.begin(), ss.begin() + 3);
  CHECK_THROWS_WITH(fit_kernels(few, kSms, 3.35e12),
                    Catch::Contains("fwd attention, head_dim 128") && Catch::Contains("at least 4"));
}

TEST_CASE("calibrate::fit_comms: alpha-beta per link and op, group sizes through (n - 1) steps") {
  std::mt19937 rng(5);
  std::normal_distribution<double> n01(0, 1);
  std::vector<CommSample> ss;
  const CommFit p2p = test::comm_fit("p2p", 8e-6, 300e9), ag = test::comm_fit("all_gather", 12e-6, 250e9);
  for (int64_t b = 1024; b <= (int64_t(1) << 30); b *= 4) {
    ss.push_back({"p", "intra_node", "p2p", 2, b, b, comm_time_s(p2p, 2, b) * (1 + 0.01 * n01(rng))});
    for (int n : {2, 4, 8})
      ss.push_back({"a", "intra_node", "all_gather", n, b, int64_t(n - 1) * b,
                    comm_time_s(ag, n, int64_t(n - 1) * b) * (1 + 0.01 * n01(rng))});
  }
  auto fits = fit_comms(ss);
  REQUIRE(fits.size() == 2);
  const CommFit& a = fits[0].op == "all_gather" ? fits[0] : fits[1];
  const CommFit& p = fits[0].op == "p2p" ? fits[0] : fits[1];
  CHECK(p.latency_s == Approx(8e-6).epsilon(0.05));
  CHECK(p.bandwidth_bytes_per_s == Approx(300e9).epsilon(0.03));
  CHECK(a.latency_s == Approx(12e-6).epsilon(0.05));
  CHECK(a.bandwidth_bytes_per_s == Approx(250e9).epsilon(0.03));
  CHECK(a.group.min == 2);
  CHECK(a.group.max == 8);
  CHECK(p.bytes.min == 1024);
  CHECK(p.bytes.max == double(int64_t(1) << 30));
  for (const auto& [b, k] : p.correction)
    CHECK(k == Approx(1).epsilon(0.04));
  CHECK(p.quality.p95_abs_rel_err < 0.03);
}

TEST_CASE("calibrate::fit_comms: the correction table absorbs what alpha-beta cannot (a slow middle range)") {
  const CommFit truth = test::comm_fit("p2p", 5e-6, 300e9);
  std::vector<CommSample> ss;
  for (int64_t b = 1024; b <= (int64_t(1) << 30); b *= 4) {
    double slow = (b >= (1 << 16) && b <= (1 << 22)) ? 1.3 : 1.0; // a protocol switch NCCL makes
    ss.push_back({"p", "intra_node", "p2p", 2, b, b, slow * comm_time_s(truth, 2, b)});
  }
  CommFit f = fit_comms(ss).at(0);
  for (const auto& s : ss)
    CHECK(comm_time_s(f, 2, s.bytes_sent) == Approx(s.measured_s).epsilon(1e-9));
  CHECK(f.quality.p95_abs_rel_err < 1e-9);
  // the line alone keeps the truth about the slow middle: its error is what the model cannot express
  CHECK(f.line_quality.samples == int(ss.size()));
  CHECK(f.line_quality.p95_abs_rel_err > 0.1);
  // between two measured sizes the factor is interpolated in log bytes
  const double mid = std::sqrt(double(1 << 22) * double(1 << 24));
  const double t_lo = comm_time_s(f, 2, int64_t(mid)) / (f.latency_s + mid / f.bandwidth_bytes_per_s);
  CHECK(t_lo == Approx(0.5 * (f.correction[6].second + f.correction[7].second)).epsilon(1e-3));
}

TEST_CASE("calibrate::fit_comms: one size only, or times that do not grow, are named errors") {
  std::vector<CommSample> one{{"p", "intra_node", "p2p", 2, 1024, 1024, 1e-5},
                              {"p", "intra_node", "p2p", 2, 1024, 1024, 1.1e-5}};
  CHECK_THROWS_WITH(fit_comms(one), Catch::Contains("p2p over intra_node") && Catch::Contains("one message size"));
  std::vector<CommSample> flat{{"p", "intra_node", "p2p", 2, 1024, 1024, 2e-5},
                               {"p", "intra_node", "p2p", 2, 1 << 20, 1 << 20, 1e-5}};
  CHECK_THROWS_WITH(fit_comms(flat), Catch::Contains("do not grow with size"));
}

TEST_CASE("calibrate::fit_overlap: medians of the slowdown ratios") {
  std::vector<OverlapSample> ss{{"a", 1.0, 1.2, 2.0, 2.2}, {"b", 1.0, 1.1, 1.0, 1.3}, {"c", 2.0, 2.6, 1.0, 1.0}};
  OverlapFit f = fit_overlap(ss);
  CHECK(f.compute_slowdown == Approx(1.2));
  CHECK(f.comm_slowdown == Approx(1.1));
  CHECK(f.samples == 3);
}

TEST_CASE("calibrate::fit_merges: launch and bandwidth per direction; too few sizes is noted, not guessed") {
  MergeFit fwd{Direction::FORWARD, 9e-6, 1.5e12, {}, {}}, bwd{Direction::BACKWARD, 4e-6, 2.5e12, {}, {}};
  std::vector<MergeSample> ss;
  std::mt19937 rng(3);
  std::normal_distribution<double> n01(0, 1);
  for (double b = 1e5; b <= 4e9; b *= 3) {
    ss.push_back({"p", Direction::FORWARD, b, merge_time_s(fwd, b) * (1 + 0.01 * n01(rng))});
    ss.push_back({"p", Direction::BACKWARD, b, merge_time_s(bwd, b) * (1 + 0.01 * n01(rng))});
  }
  std::vector<std::string> notes;
  const auto fits = fit_merges(ss, notes);
  REQUIRE(fits.size() == 2);
  CHECK(notes.empty());
  CHECK(fits[0].dir == Direction::FORWARD);
  CHECK(fits[0].launch_s == Approx(9e-6).epsilon(0.05));
  CHECK(fits[0].bytes_per_s == Approx(1.5e12).epsilon(0.03));
  CHECK(fits[1].bytes_per_s == Approx(2.5e12).epsilon(0.03));
  CHECK(fits[1].bytes.min == 1e5);
  CHECK(fits[1].quality.median_abs_rel_err < 0.015);
  std::vector<MergeSample> two{{"p", Direction::FORWARD, 1e6, 1e-5}, {"p", Direction::FORWARD, 2e6, 1.5e-5}};
  CHECK(fit_merges(two, notes).empty());
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Catch::Contains("merge fwd") && Catch::Contains("2 distinct sizes"));
}
