// Order statistics (see stats.hpp).
#include "cpsim/calibrate/stats.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <cmath>

namespace cpsim::calib {

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double percentile(std::vector<double> v, double q) {
  CPSIM_ASSERT(q > 0 && q <= 100, "percentile outside (0, 100]");
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  size_t rank = size_t(std::ceil(q / 100.0 * double(v.size())));
  return v[std::max<size_t>(rank, 1) - 1];
}

double rel_err(double predicted, double measured) {
  CPSIM_ASSERT(measured > 0, "relative error against a non-positive measurement");
  return (predicted - measured) / measured;
}

} // namespace cpsim::calib
