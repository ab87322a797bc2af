// Least-squares fits of the calibrated models (see fit.hpp and the model comments in profile.hpp).
#include "cpsim/calibrate/fit.hpp"

#include "cpsim/calibrate/stats.hpp"
#include "cpsim/model/errors.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace cpsim::calib {

namespace {

constexpr double kMinHbmFractionOfSpec = 0.25;

/**
 * min || diag(1/y) (A x - y) || with x >= 0: the relative error of every sample counts alike.
 * Active set: solve on the free columns, pin the most negative coefficient to zero, repeat.
 */
Eigen::VectorXd nnls_relative(const Eigen::MatrixXd& a, const Eigen::VectorXd& y, const Eigen::VectorXd* weight = nullptr) {
  const Eigen::Index p = a.cols();
  Eigen::VectorXd wy = Eigen::VectorXd::Ones(y.size());
  Eigen::MatrixXd wa = a;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    const double w = weight ? std::sqrt((*weight)(i)) : 1.0;
    wa.row(i) *= w / y(i);
    wy(i) = w;
  }
  std::vector<bool> free(size_t(p), true);
  for (Eigen::Index c = 0; c < p; ++c)
    if (wa.col(c).cwiseAbs().maxCoeff() == 0)
      free[size_t(c)] = false;
  Eigen::VectorXd x = Eigen::VectorXd::Zero(p);
  for (;;) {
    std::vector<Eigen::Index> cols;
    for (Eigen::Index c = 0; c < p; ++c)
      if (free[size_t(c)])
        cols.push_back(c);
    if (cols.empty())
      return x;
    Eigen::MatrixXd sub(wa.rows(), Eigen::Index(cols.size()));
    for (size_t k = 0; k < cols.size(); ++k)
      sub.col(Eigen::Index(k)) = wa.col(cols[k]);
    Eigen::VectorXd s = sub.colPivHouseholderQr().solve(wy);
    Eigen::Index worst = -1;
    for (size_t k = 0; k < cols.size(); ++k)
      if (s(Eigen::Index(k)) < 0 && (worst < 0 || s(Eigen::Index(k)) < s(worst)))
        worst = Eigen::Index(k);
    if (worst < 0) {
      x.setZero();
      for (size_t k = 0; k < cols.size(); ++k)
        x(cols[k]) = s(Eigen::Index(k));
      return x;
    }
    free[size_t(cols[size_t(worst)])] = false;
  }
}

/**
 * nnls_relative made robust (Huber weights by iteratively reweighted least squares): samples whose relative
 * residual is far beyond the typical one (scale: 1.4826 x the median absolute residual) count less. One-wave
 * grids with unequal CTA work are such samples; with equal weights they pull the per-tile and per-CTA times of
 * every other shape off (the H200 kernel sweep of 2026-12-02 did so by 5-12 % on causal and sparse ops).
 */
Eigen::VectorXd huber_nnls_relative(const Eigen::MatrixXd& a, const Eigen::VectorXd& y) {
  constexpr double kHuber = 1.345; // 95 % efficiency for normal residuals
  Eigen::VectorXd x = nnls_relative(a, y);
  Eigen::VectorXd w = Eigen::VectorXd::Ones(y.size());
  for (int iter = 0; iter < 30; ++iter) {
    std::vector<double> r(size_t(y.size()));
    for (Eigen::Index i = 0; i < y.size(); ++i)
      r[size_t(i)] = std::abs(a.row(i).dot(x) / y(i) - 1.0);
    const double scale = 1.4826 * median(r);
    if (scale <= 1e-12)
      break;
    for (Eigen::Index i = 0; i < y.size(); ++i)
      w(i) = r[size_t(i)] <= kHuber * scale ? 1.0 : kHuber * scale / r[size_t(i)];
    Eigen::VectorXd next = nnls_relative(a, y, &w);
    const bool settled = (next - x).cwiseAbs().maxCoeff() <= 1e-6 * x.cwiseAbs().maxCoeff();
    x = next;
    if (settled)
      break;
  }
  return x;
}

FitQuality quality_of(const std::vector<double>& predicted, const std::vector<double>& measured) {
  std::vector<double> e;
  for (size_t i = 0; i < predicted.size(); ++i)
    e.push_back(std::abs(rel_err(predicted[i], measured[i])));
  return {int(e.size()), median(e), percentile(e, 95)};
}

struct KernelCandidate {
  KernelFit fit;
  double cost = 0;
};

/** Fits one family for a given occupancy, alternating between the compute fit and the memory-bound set. */
KernelCandidate fit_family(const std::vector<const KernelSample*>& ss, int sm_count, int ctas_per_sm, double spec_hbm) {
  const Eigen::Index n = Eigen::Index(ss.size());
  KernelFit f;
  f.ctas_per_sm = ctas_per_sm;
  f.hbm_bytes_per_s = spec_hbm;
  f.hbm_source = "spec";
  Eigen::MatrixXd feat(n, 4);
  Eigen::VectorXd y(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    const KernelFeatures& x = ss[size_t(i)]->x;
    double waves = double(kernel_waves(x.ctas, sm_count, ctas_per_sm));
    feat.row(i) << 1.0, waves, waves * double(x.full_tiles) / double(x.ctas),
        waves * double(x.partial_tiles) / double(x.ctas);
    y(i) = ss[size_t(i)]->measured_s;
  }
  auto predict = [&](const KernelFit& k, Eigen::Index i) { return kernel_time_s(k, ss[size_t(i)]->x, sm_count); };
  std::vector<bool> memory_bound(size_t(n), false);
  for (int iter = 0; iter < 20; ++iter) {
    std::vector<Eigen::Index> rows;
    for (Eigen::Index i = 0; i < n; ++i)
      if (!memory_bound[size_t(i)])
        rows.push_back(i);
    if (rows.size() < 2)
      break;
    Eigen::MatrixXd a(Eigen::Index(rows.size()), 4);
    Eigen::VectorXd b(Eigen::Index(rows.size()));
    for (size_t k = 0; k < rows.size(); ++k) {
      a.row(Eigen::Index(k)) = feat.row(rows[k]);
      b(Eigen::Index(k)) = y(rows[k]);
    }
    Eigen::VectorXd p = huber_nnls_relative(a, b);
    f.launch_s = p(0);
    f.cta_s = p(1);
    f.tile_full_s = p(2);
    // no partly masked tile measured: the full tile's time stands in, and predictions with partial tiles say so
    f.tile_partial_s = a.col(3).cwiseAbs().maxCoeff() > 0 ? p(3) : p(2);
    // memory-bound candidates: measured well above the compute fit
    double num = 0, den = 0;
    for (Eigen::Index i = 0; i < n; ++i) {
      double compute = f.launch_s + kernel_compute_s(f, ss[size_t(i)]->x, sm_count);
      bool mem = memory_bound[size_t(i)] || y(i) > 1.15 * compute;
      if (mem && y(i) > f.launch_s) {
        double bytes = ss[size_t(i)]->x.bytes, w = 1.0 / (y(i) * y(i));
        num += w * bytes * (y(i) - f.launch_s);
        den += w * bytes * bytes;
      }
    }
    std::vector<bool> next(size_t(n), false);
    // A streaming attention kernel that is really memory-bound still moves its bytes at a good fraction of the
    // data-sheet bandwidth. A "bandwidth" far below it is the compute model missing on some samples (one-wave grids
    // with unequal CTA work), and taking it as HBM would price every small op at that false rate.
    if (num > 0 && den / num >= kMinHbmFractionOfSpec * spec_hbm) {
      f.hbm_bytes_per_s = den / num;
      f.hbm_source = "fit";
      for (Eigen::Index i = 0; i < n; ++i)
        next[size_t(i)] = ss[size_t(i)]->x.bytes / f.hbm_bytes_per_s > kernel_compute_s(f, ss[size_t(i)]->x, sm_count);
    }
    if (next == memory_bound)
      break;
    memory_bound = next;
  }
  if (std::none_of(memory_bound.begin(), memory_bound.end(), [](bool b) { return b; })) {
    f.hbm_bytes_per_s = spec_hbm;
    f.hbm_source = "spec";
  }
  KernelCandidate c{f, 0};
  for (Eigen::Index i = 0; i < n; ++i) {
    double e = rel_err(predict(f, i), y(i));
    c.cost += e * e;
  }
  return c;
}

} // namespace

std::vector<KernelFit> fit_kernels(const std::vector<KernelSample>& samples, int sm_count, double spec_hbm) {
  CPSIM_ASSERT(sm_count > 0 && spec_hbm > 0, "kernel fit needs the SM count and a data-sheet HBM bandwidth");
  std::map<std::pair<int, int>, std::vector<const KernelSample*>> families;
  for (const auto& s : samples)
    families[{int(s.x.dir), s.x.head_dim}].push_back(&s);
  std::vector<KernelFit> out;
  for (const auto& [key, ss] : families) {
    std::set<std::tuple<int64_t, int64_t, int64_t>> distinct;
    for (const auto* s : ss)
      distinct.insert({s->x.ctas, s->x.full_tiles, s->x.partial_tiles});
    const std::string what = to_string(Direction(key.first)) + " attention, head_dim " + std::to_string(key.second);
    if (distinct.size() < 4)
      throw UserError("kernel samples for " + what + ": " + std::to_string(distinct.size()) +
                      " distinct shapes, the fit needs at least 4");
    KernelCandidate best;
    bool have = false;
    for (int k : {1, 2, 3, 4}) {
      KernelCandidate c = fit_family(ss, sm_count, k, spec_hbm);
      if (!have || c.cost < best.cost * (1 - 1e-9)) {
        best = c;
        have = true;
      }
    }
    KernelFit f = best.fit;
    f.dir = Direction(key.first);
    f.head_dim = key.second;
    f.tiles = f.ctas = f.tokens = f.partial_fraction = Range::none();
    std::vector<double> pred, meas;
    for (const auto* s : ss) {
      int64_t tiles = s->x.full_tiles + s->x.partial_tiles;
      f.tiles.extend(double(tiles));
      f.ctas.extend(double(s->x.ctas));
      f.tokens.extend(double(s->x.tokens));
      f.partial_fraction.extend(double(s->x.partial_tiles) / double(tiles));
      pred.push_back(kernel_time_s(f, s->x, sm_count));
      meas.push_back(s->measured_s);
    }
    if (f.tile_full_s <= 0)
      throw UserError("kernel samples for " + what + ": the fit gives no time per tile (times do not grow with work)");
    f.quality = quality_of(pred, meas);
    out.push_back(f);
  }
  return out;
}

double comm_time_s(const CommFit& f, int group, int64_t bytes_sent) {
  const double steps = f.op == "p2p" ? 1.0 : double(group - 1);
  double t = steps * f.latency_s + double(bytes_sent) / f.bandwidth_bytes_per_s;
  const auto& c = f.correction;
  if (c.empty())
    return t;
  const double b = double(bytes_sent);
  if (b <= c.front().first)
    return t * c.front().second;
  if (b >= c.back().first)
    return t * c.back().second;
  size_t i = 1;
  while (c[i].first < b)
    ++i;
  const double u = (std::log(b) - std::log(c[i - 1].first)) / (std::log(c[i].first) - std::log(c[i - 1].first));
  return t * (c[i - 1].second + u * (c[i].second - c[i - 1].second));
}

std::vector<CommFit> fit_comms(const std::vector<CommSample>& samples) {
  std::map<std::pair<std::string, std::string>, std::vector<const CommSample*>> groups;
  for (const auto& s : samples)
    groups[{s.link, s.op}].push_back(&s);
  std::vector<CommFit> out;
  for (const auto& [key, ss] : groups) {
    const std::string what = key.second + " over " + key.first;
    std::set<int64_t> sizes;
    for (const auto* s : ss)
      sizes.insert(s->bytes_sent);
    if (sizes.size() < 2)
      throw UserError("communication samples for " + what + ": one message size only, the fit needs two or more");
    const Eigen::Index n = Eigen::Index(ss.size());
    Eigen::MatrixXd a(n, 2);
    Eigen::VectorXd y(n);
    for (Eigen::Index i = 0; i < n; ++i) {
      const CommSample& s = *ss[size_t(i)];
      a.row(i) << (s.op == "p2p" ? 1.0 : double(s.group - 1)), double(s.bytes_sent);
      y(i) = s.measured_s;
    }
    Eigen::VectorXd p = nnls_relative(a, y);
    if (p(1) <= 0)
      throw UserError("communication samples for " + what +
                      ": times do not grow with size, no bandwidth can be fitted");
    CommFit f;
    f.link = key.first;
    f.op = key.second;
    f.latency_s = p(0);
    f.bandwidth_bytes_per_s = 1.0 / p(1);
    f.bytes = f.group = Range::none();
    std::vector<double> line_pred, line_meas;
    for (const auto* s : ss) {
      line_pred.push_back(comm_time_s(f, s->group, s->bytes_sent)); // no correction yet: the line alone
      line_meas.push_back(s->measured_s);
    }
    f.line_quality = quality_of(line_pred, line_meas);
    std::map<int64_t, std::vector<double>> ratio;
    for (const auto* s : ss) {
      ratio[s->bytes_sent].push_back(s->measured_s / comm_time_s(f, s->group, s->bytes_sent));
      f.bytes.extend(double(s->bytes_sent));
      f.group.extend(double(s->group));
    }
    for (const auto& [b, r] : ratio)
      f.correction.push_back({double(b), median(r)});
    std::vector<double> pred, meas;
    for (const auto* s : ss) {
      pred.push_back(comm_time_s(f, s->group, s->bytes_sent));
      meas.push_back(s->measured_s);
    }
    f.quality = quality_of(pred, meas);
    out.push_back(f);
  }
  return out;
}

OverlapFit fit_overlap(const std::vector<OverlapSample>& samples) {
  CPSIM_ASSERT(!samples.empty(), "overlap fit of no samples");
  std::vector<double> comp, comm;
  for (const auto& s : samples) {
    comp.push_back(s.compute_overlapped_s / s.compute_alone_s);
    comm.push_back(s.comm_overlapped_s / s.comm_alone_s);
  }
  return {median(comp), median(comm), int(samples.size())};
}

double merge_time_s(const MergeFit& f, double bytes) {
  return f.launch_s + bytes / f.bytes_per_s;
}

std::vector<MergeFit> fit_merges(const std::vector<MergeSample>& samples, std::vector<std::string>& not_calibrated) {
  std::vector<MergeFit> out;
  for (Direction dir : {Direction::FORWARD, Direction::BACKWARD}) {
    std::vector<const MergeSample*> ss;
    std::set<double> sizes;
    for (const auto& s : samples)
      if (s.dir == dir) {
        ss.push_back(&s);
        sizes.insert(s.bytes);
      }
    if (ss.empty())
      continue;
    const std::string what = "merge " + to_string(dir);
    if (sizes.size() < 3) {
      not_calibrated.push_back(what + ": " + std::to_string(sizes.size()) + " distinct sizes measured, the fit needs 3");
      continue;
    }
    Eigen::MatrixXd a(Eigen::Index(ss.size()), 2);
    Eigen::VectorXd y(Eigen::Index(ss.size()));
    for (size_t i = 0; i < ss.size(); ++i) {
      a.row(Eigen::Index(i)) << 1.0, ss[i]->bytes;
      y(Eigen::Index(i)) = ss[i]->measured_s;
    }
    const Eigen::VectorXd x = huber_nnls_relative(a, y);
    if (!(x(1) > 0)) {
      not_calibrated.push_back(what + ": the times do not grow with the bytes merged (no bandwidth to fit)");
      continue;
    }
    MergeFit f;
    f.dir = dir;
    f.launch_s = x(0);
    f.bytes_per_s = 1.0 / x(1);
    f.bytes = Range::none();
    std::vector<double> pred, meas;
    for (const auto* s : ss) {
      f.bytes.extend(s->bytes);
      pred.push_back(merge_time_s(f, s->bytes));
      meas.push_back(s->measured_s);
    }
    f.quality = quality_of(pred, meas);
    out.push_back(f);
  }
  return out;
}

Profile fit_profile(const RawMeasurements& raw, double spec_hbm_bytes_per_s) {
  Profile p;
  p.gpu_name = raw.gpu_name;
  p.sm_count = raw.sm_count;
  p.gpus = raw.gpus;
  p.hardware = raw.hardware;
  p.hardware_gpu = raw.hardware_gpu;
  p.date_utc = raw.date_utc;
  p.git_sha = raw.git_sha;
  p.tile_m = raw.tile_m;
  p.tile_n = raw.tile_n;
  p.not_calibrated = raw.not_calibrated;
  p.kernels = fit_kernels(raw.kernels, raw.sm_count, spec_hbm_bytes_per_s);
  p.merges = fit_merges(raw.merges, p.not_calibrated);
  if (p.merges.empty() && raw.merges.empty())
    p.not_calibrated.push_back("merge ops: no merge samples in the raw measurements (runs before 2026-12-02; "
                               "`calibrate --from-run DIR` reads them from a run's plans and measured ops)");
  p.comms = fit_comms(raw.comms);
  if (!raw.overlaps.empty()) {
    p.has_overlap = true;
    p.overlap = fit_overlap(raw.overlaps);
  }
  if (p.kernels.empty() && p.comms.empty())
    throw UserError("the raw measurements hold no kernel and no communication samples: nothing to fit");
  return p;
}

} // namespace cpsim::calib
