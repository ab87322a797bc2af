// Robust relative NNLS (see robust_fit.hpp).
#include "robust_fit.hpp"

#include "cpsim/calibrate/stats.hpp"

#include <cmath>

namespace cpsim::calib {

/**
 * min || diag(1/y) (A x - y) || with x >= 0: the relative error of every sample counts alike.
 * Active set: solve on the free columns, pin the most negative coefficient to zero, repeat.
 */
Eigen::VectorXd nnls_relative(const Eigen::MatrixXd& a, const Eigen::VectorXd& y, const Eigen::VectorXd* weight) {
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

} // namespace cpsim::calib
