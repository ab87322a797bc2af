// Fitting the profile's parameters to raw measurements with Eigen: weighted least squares on the
// relative error (a 1 us op and a 10 ms op count alike), non-negative, with the discrete choices
// (CTAs per SM, memory- or compute-bound) searched around it.
#pragma once

#include "cpsim/calibrate/kernel_fit.hpp"
#include "cpsim/calibrate/profile.hpp"
#include "cpsim/calibrate/samples.hpp"

#include <vector>

namespace cpsim::calib {

/** One MergeFit per direction present; a direction that cannot be fitted is added to `not_calibrated`, saying why. */
std::vector<MergeFit> fit_merges(const std::vector<MergeSample>& samples, std::vector<std::string>& not_calibrated);
double merge_time_s(const MergeFit& f, double bytes);
/** One CommFit per (link, op) present; UserError when times do not grow with size (no bandwidth). */
std::vector<CommFit> fit_comms(const std::vector<CommSample>& samples);
OverlapFit fit_overlap(const std::vector<OverlapSample>& samples);

/** Everything: raw measurements -> profile (metadata copied; `name`, `source` from the caller). */
Profile fit_profile(const RawMeasurements& raw, double spec_hbm_bytes_per_s, const KernelFitOptions& kernel_options = {});

/** Prediction of a communication sample by its fit (shared with the calibrated comm model). */
double comm_time_s(const CommFit& f, int group, int64_t bytes_sent);

} // namespace cpsim::calib
