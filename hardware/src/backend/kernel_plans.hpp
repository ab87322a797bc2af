// Kernel plans the attention kernels' planner does not build by itself: per-head block-sparse masks (DSV; one
// list slot per query head, since the kernels' own mask holds one layout per sequence) and PIT's packed tiles
// (dense tiles of gathered micro-tiles, whose per-element mask is a small layout of its own per fixed tile).
// CPU only; compute_kernels.cpp uploads what these return.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/kernels/block_plan.hpp"
#include "cpsim/model/mask_geometry.hpp"

#include <vector>

namespace cpsim::backend {

struct PlannedKernel {
  kernels::KernelPlan plan;
  kernels::MaskDesc mask; // what the kernels apply inside partial tiles
};

/** The kernels' view of a head-uniform mask (no per-head layouts): full, causal, window, one layout per sequence, or
 *  a range mask's key intervals per row. */
kernels::MaskDesc kernel_mask(const MaskGeometry& g, int n_seqs);

/**
 * Rectangles under a per-head block-sparse mask, query heads [head_begin, head_end): one list slot per head.
 * Rectangles are cut at layout-block boundaries so that every kernel tile lies inside one layout block of each
 * side; listed tiles are then visible for their head as a whole, and the kernel masks only causally.
 */
PlannedKernel per_head_plan(const std::vector<SegmentRows>& segs, const MaskGeometry& g, int head_begin, int head_end);

/**
 * PIT: the fixed tiles of one gather slot against their packed rows, each fixed tile a sequence of its own to the
 * kernels with the positions of its query and key rows renumbered 0.. (a query tile against its packed keys along
 * columns; the packed queries against a key tile along rows). A layout of lb x lb blocks (lb divides the layout block,
 * the granularity and every micro-tile's start and length) holds the original mask and, when causal, each query row's
 * key interval holds the diagonal (packed rows are in position order, so a query sees a prefix of the key rows): the
 * partial tiles are masked exactly although the packed rows are not consecutive. Memory: linear in the packed rows.
 */
PlannedKernel gathered_plan(const GatherLayout& gl, int slot, const MaskGeometry& g, int head);

} // namespace cpsim::backend
