// Fitting the attention kernel model (kernel_model.hpp) to measured ops. The discrete properties of the kernels —
// their tile, how each launch lays out its CTAs, CTAs resident per SM, how much faster a lone CTA runs — are chosen
// among candidates by how well each explains the measurements; the per-op, per-CTA and per-tile times of each
// candidate are a robust non-negative least-squares fit. Nothing of the kernels' code is assumed: a new kernel
// implementation is calibrated by the same search.
#pragma once

#include "cpsim/calibrate/profile.hpp"
#include "cpsim/calibrate/samples.hpp"

#include <vector>

namespace cpsim::calib {

struct KernelFitOptions {
  /** Kernel tiles tried (query rows x key rows). */
  std::vector<KernelTile> tiles{{64, 64}, {128, 64}, {64, 128}, {128, 128}};
  int max_ctas_per_sm = 4;
  /** Worker threads for the search; 0: one per hardware thread. The result does not depend on it. */
  unsigned threads = 0;
};

/** "64x64" or "128x64,64x64" (query rows x key rows): the tiles to try; UserError naming the option otherwise. */
std::vector<KernelTile> parse_kernel_tiles(const std::string& list, const std::string& option);

/** The grid layouts tried for a direction, each the list of launches of one op. */
std::vector<std::vector<GridKind>> grid_candidates(Direction dir);

/**
 * One KernelFit per (direction, head_dim) present. UserError when a family has fewer than 6 distinct shapes or the
 * fit gives no time per tile.
 */
std::vector<KernelFit> fit_kernels(const std::vector<KernelSample>& samples, int sm_count, double spec_hbm_bytes_per_s,
                                   const KernelFitOptions& o = {});

/**
 * The linear part alone: per-op, per-CTA and per-tile times (and HBM) for one fixed discrete choice — tile, launches,
 * CTAs per SM of each, lone-CTA fraction — over samples of one family. The search of fit_kernels calls it per
 * candidate; tests and diagnoses call it to see how well a given structure explains measurements.
 */
KernelFit fit_kernel_structure(const std::vector<KernelSample>& samples, int sm_count, double spec_hbm_bytes_per_s,
                               KernelTile tile, const std::vector<GridKind>& grids, const std::vector<int>& ctas_per_sm,
                               double alone_fraction);

/** A measured op beside the fitted model's prediction (in-sample residuals, for the record of a calibration). */
struct KernelResidual {
  const KernelSample* sample = nullptr;
  double predicted_s = 0;
};
/** Every sample predicted by the profile's fit of its family (samples of families without a fit are left out). */
std::vector<KernelResidual> kernel_residuals(const std::vector<KernelFit>& fits,
                                             const std::vector<KernelSample>& samples, int sm_count);

} // namespace cpsim::calib
