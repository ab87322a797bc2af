// Order statistics used by fit-quality and validation reports (one definition, so a p95 in a profile
// and in a validation table mean the same thing).
#pragma once

#include <vector>

namespace cpsim::calib {

/** Median (mean of the two middle values for even sizes); 0 for an empty list. */
double median(std::vector<double> v);
/** Nearest-rank percentile, q in (0, 100]: the smallest value with at least q % of values <= it. */
double percentile(std::vector<double> v, double q);
/** (predicted - measured) / measured. */
double rel_err(double predicted, double measured);

} // namespace cpsim::calib
