// Robust non-negative least squares on relative errors, shared by the kernel, merge and link fits (private to
// calibrate/src: it exposes Eigen types, which the library's public headers do not).
#pragma once

#include "cpsim/calibrate/profile.hpp"

#include <Eigen/Dense>

#include <vector>

namespace cpsim::calib {

/** min || diag(1/y) (A x - y) || over x >= 0, each row optionally weighted. */
Eigen::VectorXd nnls_relative(const Eigen::MatrixXd& a, const Eigen::VectorXd& y, const Eigen::VectorXd* weight = nullptr);
/** nnls_relative with Huber weights, iteratively reweighted: rows far off the typical residual count less. */
Eigen::VectorXd huber_nnls_relative(const Eigen::MatrixXd& a, const Eigen::VectorXd& y);
/** Median and p95 of |predicted / measured - 1|. */
FitQuality quality_of(const std::vector<double>& predicted, const std::vector<double>& measured);

} // namespace cpsim::calib
