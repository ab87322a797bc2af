// How long a grid of CTAs takes on a GPU's SMs, and which CTAs set that time. CTAs start in decreasing order of
// cost (longest first), breadth-first over the SMs, at most `slots` resident per SM. While CTAs wait to start, every
// slot is busy and a CTA takes its cost (its time on a full SM). Once none waits, an SM left with j < slots CTAs
// runs each of them faster, min(slots / j, 1 / alone_fraction) times the full-SM rate: a lone CTA has the SM's pipes
// to itself but cannot issue faster than it ever can. Wave quantization (a last partial wave costs a whole CTA) and
// the long-row tails of causal and sparse grids both follow from this, instead of being separate terms.
#pragma once

#include <cstdint>
#include <vector>

namespace cpsim {

struct SmGrid {
  int sms = 132;
  int slots = 1;               // CTAs resident per SM (occupancy)
  double alone_fraction = 1.0; // time of a CTA alone on an SM over its time on a full one, in (0, 1]
};

struct GridMakespan {
  double seconds = 0;
  /** Per class: seconds = sum_i weights[i] * cost[i]. The CTAs that set the time (those of the SM that finishes
   *  last), rate-adjusted. For a fixed order of events the time is linear in the costs; a fit uses these weights. */
  std::vector<double> weights;
};

/** Makespan of classes of equal CTAs: `cost[i]` seconds each on a full SM, `count[i]` of them. */
GridMakespan grid_makespan(const std::vector<double>& cost, const std::vector<int64_t>& count, const SmGrid& g);

} // namespace cpsim
