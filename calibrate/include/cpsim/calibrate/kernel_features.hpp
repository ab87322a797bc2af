// What the calibrated kernel model sees of one attention op: CTAs, full and partial tiles (over all
// heads), memory traffic and size. One function computes them for fitting and for prediction, so
// the fitted parameters always meet the same features they were fitted on.
#pragma once

#include "cpsim/calibrate/profile.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <cstdint>

namespace cpsim::calib {

struct KernelFeatures {
  Direction dir = Direction::FORWARD;
  int head_dim = 0;
  int64_t ctas = 0;          // forward: query-tile rows x heads; backward: key-tile columns x heads
  int64_t full_tiles = 0;    // x heads
  int64_t partial_tiles = 0; // x heads
  double bytes = 0;          // HBM traffic, as the roofline model counts it
  int64_t tokens = 0;        // query rows
};

KernelFeatures kernel_features(const Op& op, const Workload& w, int64_t tile_m, int64_t tile_n);

/** Waves of `ctas` CTAs over sm_count x ctas_per_sm resident slots (at least one). */
int64_t kernel_waves(int64_t ctas, int sm_count, int ctas_per_sm);

/** The model of KernelFit's comment, without launch: the part that scales with the grid. */
double kernel_compute_s(const KernelFit& f, const KernelFeatures& x, int sm_count);
/** Full prediction: launch + max(compute, memory). */
double kernel_time_s(const KernelFit& f, const KernelFeatures& x, int sm_count);

} // namespace cpsim::calib
