// The calibrated attention kernel model on one op: its CTA classes per grid at the kernel's tile, priced by a
// KernelFit and placed on the SMs. One function computes the shape for fitting and for prediction, so the fitted
// parameters always meet the features they were fitted on; the design row is the same time as a linear form in the
// parameters (for a fixed order of events), which is what the least-squares fit solves.
#pragma once

#include "cpsim/calibrate/profile.hpp"
#include "cpsim/model/kernel_grid.hpp"
#include "cpsim/model/mask_geometry.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <cstdint>
#include <vector>

namespace cpsim::calib {

/** One attention op seen at one kernel tile: its CTA classes for each grid asked for, and its size. */
struct KernelShape {
  std::vector<std::vector<CtaClass>> grids;
  double bytes = 0;    // HBM traffic, as the roofline model counts it
  int64_t tokens = 0;  // query rows
  double tiles = 0;    // tiles x heads (the first grid's)
  double partial = 0;  // partly masked tiles x heads (the first grid's)
  int64_t ctas = 0;    // CTAs of the largest grid
  double gqa = 1;      // query heads per KV head
};

KernelShape kernel_shape(const Op& op, const Workload& w, const MaskGeometry& m, KernelTile tile,
                         const std::vector<GridKind>& grids);

/** Parameters per grid in a design row: cta_s, head_s, tile_full_s, tile_partial_s, partial_visible_s. */
inline constexpr int kGridParams = 5;
/** Length of a design row: launch_s, then kGridParams per grid. */
inline int design_width(size_t grids) { return 1 + kGridParams * int(grids); }

/** Compute part (no launch, no memory bound): the grids' makespans one after another. */
double kernel_compute_s(const KernelFit& f, const KernelShape& x, int sm_count);
/** Full prediction: launch + max(compute, memory). */
double kernel_time_s(const KernelFit& f, const KernelShape& x, int sm_count);
/**
 * The compute time + launch as a linear form in (launch_s, per grid: cta_s, head_s, tile_full_s, tile_partial_s,
 * partial_visible_s): row . params == launch_s + kernel_compute_s(f, x) at f's parameters.
 */
std::vector<double> kernel_design_row(const KernelFit& f, const KernelShape& x, int sm_count);

/** Query heads per KV head of a workload (1 without GQA). */
double gqa_ratio(const Workload& w);

} // namespace cpsim::calib
