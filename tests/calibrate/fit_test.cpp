// The fits recover known parameters: measurements are synthesised from a KernelFit / CommFit with the models' own
// closed forms, exactly (the fit must reproduce them, and find the kernel's tile, grid layout, occupancy and lone-CTA
// rate among its candidates) and with 1 % noise (within tolerance), including memory-bound ops, one-wave grids,
// GQA groups and NCCL-like size effects.
#include "cpsim/calibrate/fit.hpp"
#include "cpsim/calibrate/kernel_model.hpp"
#include "profile_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
constexpr int kSms = 16; // a small GPU: a few heads already fill it, one head leaves it mostly idle

/** Shapes of a sweep: lengths (some odd multiples of 64), GQA groups 1..8, full / causal / windows / block layouts. */
std::vector<KernelSample> synth_kernels(const KernelFit& truth, double noise, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01(0, 1);
  const std::vector<Json> masks = {{{"kind", "full"}},
                                   {{"kind", "causal"}},
                                   {{"kind", "sliding_window"}, {"window", 200}},
                                   {{"kind", "sliding_window"}, {"window", 700}},
                                   {{"kind", "block_sparse"}, {"block", 128}, {"density", 0.4}, {"seed", 3}, {"causal", true}}};
  std::vector<GridKind> kinds;
  for (const auto& g : truth.grids)
    kinds.push_back(g.kind);
  std::vector<KernelSample> out;
  for (int64_t seq : {576, 1088, 2112, 4096})
    for (auto [h, kv] : {std::pair{1, 1}, {4, 4}, {8, 2}, {16, 2}})
      for (const Json& m : masks) {
        KernelSample s;
        s.plan = "synthetic";
        s.mask = m.at("kind").get<std::string>();
        s.workload = workload_from_json({{"seq_lens", {seq}}, {"heads", h}, {"kv_heads", kv},
                                         {"head_dim", truth.head_dim}, {"dtype", "bf16"}, {"mask", m}},
                                        "workload", "");
        s.op.kind = OpKind::ATTENTION;
        s.op.dir = truth.dir;
        s.op.head_begin = 0;
        s.op.head_end = h;
        s.op.segments = {{0, {0, seq}, {0, seq}}};
        const MaskGeometry g(s.workload);
        s.measured_s = kernel_time_s(truth, kernel_shape(s.op, s.workload, g, truth.tile, kinds), kSms) *
                       (1 + noise * n01(rng));
        out.push_back(s);
      }
  return out;
}

KernelFit truth_fwd() {
  KernelFit t = test::kernel_fit(Direction::FORWARD, 64);
  // memory-bound at 40 GB/s only for the shortest, many-headed ops
  t.hbm_bytes_per_s = 40e9;
  return t;
}
constexpr double kSpecHbm = 100e9;

void check_same(const KernelFit& f, const KernelFit& t, double eps) {
  CHECK(f.tile == t.tile);
  REQUIRE(f.grids.size() == t.grids.size());
  CHECK(f.launch_s == Approx(t.launch_s).epsilon(eps * 10));
  for (size_t i = 0; i < f.grids.size(); ++i) {
    INFO("grid " << i);
    CHECK(f.grids[i].kind == t.grids[i].kind);
    CHECK(f.grids[i].ctas_per_sm == t.grids[i].ctas_per_sm);
    CHECK(f.grids[i].tile_full_s == Approx(t.grids[i].tile_full_s).epsilon(eps));
    CHECK(f.grids[i].tile_partial_s + 0.5 * f.grids[i].partial_visible_s ==
          Approx(t.grids[i].tile_partial_s + 0.5 * t.grids[i].partial_visible_s).epsilon(eps * 2));
    CHECK(f.grids[i].cta_s + 2 * f.grids[i].head_s == Approx(t.grids[i].cta_s + 2 * t.grids[i].head_s).epsilon(eps * 10));
  }
}
} // namespace

TEST_CASE("calibrate::fit_kernels: exact synthetic measurements give back the model, its tile and its occupancy") {
  const KernelFit truth = truth_fwd();
  auto fits = fit_kernels(synth_kernels(truth, 0, 1), kSms, kSpecHbm);
  REQUIRE(fits.size() == 1);
  const KernelFit& f = fits[0];
  CHECK(f.dir == Direction::FORWARD);
  CHECK(f.head_dim == 64);
  check_same(f, truth, 1e-4);
  CHECK(f.alone_fraction == Approx(truth.alone_fraction));
  CHECK(f.hbm_source == "fit");
  CHECK(f.hbm_bytes_per_s == Approx(truth.hbm_bytes_per_s).epsilon(1e-3));
  CHECK(f.quality.median_abs_rel_err < 1e-6);
  CHECK(f.gqa.min == 1);
  CHECK(f.gqa.max == 8);
  CHECK(f.tokens.max == 4096);
  // the other candidates are recorded, worse than the chosen one
  REQUIRE(f.candidates.size() >= 2);
  CHECK(f.candidates[0].tile == truth.tile);
  CHECK(f.candidates[1].loss > f.candidates[0].loss);
}

TEST_CASE("calibrate::fit_kernels: a backward of two launches, one walking the heads of a KV group, is told apart") {
  KernelFit truth = test::kernel_fit(Direction::BACKWARD, 128);
  truth.grids[1].ctas_per_sm = 1;
  truth.alone_fraction = 0.8;
  const auto fits = fit_kernels(synth_kernels(truth, 0, 2), kSms, 3e12);
  REQUIRE(fits.size() == 1);
  check_same(fits[0], truth, 1e-3);
  CHECK(fits[0].alone_fraction == Approx(0.8));
  CHECK(fits[0].quality.p95_abs_rel_err < 1e-4);
}

TEST_CASE("calibrate::fit_kernels: the kernel's tile is read off the measurements") {
  KernelFit truth = truth_fwd();
  truth.tile = {128, 128};
  truth.hbm_bytes_per_s = 3e12;
  const KernelFit f = fit_kernels(synth_kernels(truth, 0, 4), kSms, 3e12).at(0);
  CHECK(f.tile == KernelTile{128, 128});
  CHECK(f.quality.median_abs_rel_err < 1e-6);
}

TEST_CASE("calibrate::fit_kernels: 1 % noise is recovered within tolerance") {
  const KernelFit truth = truth_fwd();
  const KernelFit f = fit_kernels(synth_kernels(truth, 0.01, 7), kSms, kSpecHbm).at(0);
  CHECK(f.tile == truth.tile);
  CHECK(f.grids[0].ctas_per_sm == truth.grids[0].ctas_per_sm);
  CHECK(f.grids[0].tile_full_s == Approx(truth.grids[0].tile_full_s).epsilon(0.03));
  CHECK(f.alone_fraction == Approx(truth.alone_fraction).margin(0.051));
  CHECK(f.hbm_bytes_per_s == Approx(truth.hbm_bytes_per_s).epsilon(0.03));
  CHECK(f.quality.median_abs_rel_err < 0.015);
}

TEST_CASE("calibrate::fit_kernels: a partly masked tile priced beyond what masking can cost is tied to the full tile") {
  // masking cannot cost twice the tile's own work; a fit that says so absorbs something else, and would price every
  // masked tile of a prediction at it
  KernelFit truth = truth_fwd();
  truth.hbm_bytes_per_s = 3e12;
  truth.grids[0].tile_partial_s = 3 * truth.grids[0].tile_full_s;
  truth.grids[0].partial_visible_s = 0;
  auto within = [](const GridFit& g) {
    return g.tile_partial_s + g.partial_visible_s <= 2 * g.tile_full_s &&
           g.tile_partial_s + 0.5 * g.partial_visible_s >= 0.5 * g.tile_full_s;
  };
  const KernelFit f = fit_kernels(synth_kernels(truth, 0, 5), kSms, 3e12).at(0);
  CHECK(f.grids[0].tile_partial_s == f.grids[0].tile_full_s);
  CHECK(f.grids[0].partial_visible_s == 0);
  CHECK(within(f.grids[0]));
  // nor can a half-visible tile cost less than half a full one
  truth.grids[0].tile_partial_s = 0.1 * truth.grids[0].tile_full_s;
  const KernelFit g = fit_kernels(synth_kernels(truth, 0, 5), kSms, 3e12).at(0);
  CHECK(within(g.grids[0]));
}

TEST_CASE("calibrate::fit_kernels: no memory-bound op keeps the data sheet's HBM; no partial tile reuses the full tile") {
  KernelFit truth = truth_fwd();
  truth.hbm_bytes_per_s = 3e12;
  std::vector<KernelSample> ss;
  for (auto s : synth_kernels(truth, 0, 3))
    if (s.mask == "full")
      ss.push_back(s);
  const KernelFit f = fit_kernels(ss, kSms, 3e12).at(0);
  CHECK(f.hbm_source == "spec");
  CHECK(f.hbm_bytes_per_s == 3e12);
  CHECK(f.grids[0].tile_partial_s == f.grids[0].tile_full_s);
  CHECK(f.partial_fraction.max == 0);
}

namespace {
/** Samples the model cannot express: block-sparse ops of many heads measured much slower than it says. */
bool misfit(const KernelSample& s) {
  return s.mask == "block_sparse" && s.workload.heads >= 4 && s.workload.seq_lens[0] >= 2112;
}
std::vector<KernelSample> with_misfits(std::vector<KernelSample> ss, double slow) {
  for (auto& s : ss)
    if (misfit(s))
      s.measured_s *= slow;
  return ss;
}
} // namespace

TEST_CASE("calibrate::fit_kernels: samples far off the model do not pull the per-tile time of the others") {
  KernelFit truth = truth_fwd();
  truth.hbm_bytes_per_s = 3e12;
  // 6 of 80 samples measured 40 % slower than the closed form: equal weights would shift every parameter
  const auto ss = with_misfits(synth_kernels(truth, 0.005, 11), 1.4);
  const KernelFit f = fit_kernels(ss, kSms, 3e12).at(0);
  CHECK(f.grids[0].tile_full_s == Approx(truth.grids[0].tile_full_s).epsilon(0.02));
  std::vector<double> err;
  for (const auto& r : kernel_residuals({f}, ss, kSms))
    if (!misfit(*r.sample))
      err.push_back(std::abs(r.predicted_s / r.sample->measured_s - 1));
  std::sort(err.begin(), err.end());
  REQUIRE(err.size() == 74);
  CHECK(err[err.size() / 2] < 0.01);
}

TEST_CASE("calibrate::fit_kernels: a 'bandwidth' far below the data sheet is not taken for HBM") {
  // no op is memory-bound, but some run 3x slower than the compute model says: read as memory time they would imply
  // an HBM of a few GB/s and price every small op at it
  KernelFit truth = truth_fwd();
  truth.hbm_bytes_per_s = 3e12;
  const KernelFit f = fit_kernels(with_misfits(synth_kernels(truth, 0, 3), 3.0), kSms, 3e12).at(0);
  CHECK(f.hbm_source == "spec");
  CHECK(f.hbm_bytes_per_s == 3e12);
}

TEST_CASE("calibrate::fit_kernels: families split by direction and head_dim; too few shapes is a named error") {
  std::vector<KernelSample> ss = synth_kernels(truth_fwd(), 0, 1);
  for (auto s : synth_kernels(test::kernel_fit(Direction::BACKWARD, 128), 0, 2))
    ss.push_back(s);
  KernelFitOptions one_tile;
  one_tile.tiles = {{64, 64}};
  auto fits = fit_kernels(ss, kSms, kSpecHbm, one_tile);
  REQUIRE(fits.size() == 2);
  CHECK(fits[0].dir == Direction::FORWARD);
  CHECK(fits[1].head_dim == 128);
  std::vector<KernelSample> few(ss.begin(), ss.begin() + 5);
  CHECK_THROWS_WITH(fit_kernels(few, kSms, kSpecHbm),
                    Catch::Contains("fwd attention, head_dim 64") && Catch::Contains("at least 6"));
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
