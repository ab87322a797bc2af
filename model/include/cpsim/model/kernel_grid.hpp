// How an attention kernel's work splits over its thread blocks (CTAs). For a kernel tile of tile_q query rows x
// tile_k key rows and a grid layout (one CTA per query tile and head, per query tile and KV head, per key tile and
// head, or per key tile and KV head walking the query heads of its group), it lists the tiles each CTA computes:
// fully visible ones, partly masked ones and how much of those is visible. CTAs with equal work are one class with
// a count. Which tile and which grids a kernel uses is measured by calibration (calibrate/), not assumed here.
#pragma once

#include "cpsim/model/mask_geometry.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim {

enum class GridKind {
  Q_PER_HEAD,    // one CTA per (query tile, head): a flash forward, a dQ pass
  Q_PER_KV_HEAD, // one CTA per (query tile, KV head) over the heads of its group (GQA packed into one CTA)
  K_PER_HEAD,    // one CTA per (key tile, head): a backward whose dK/dV are summed over the group afterwards
  K_PER_KV_HEAD  // one CTA per (key tile, KV head) walking the group's query heads: dK/dV kept in registers
};
std::string to_string(GridKind g);
/** "q_per_head", "q_per_kv_head", "k_per_head" or "k_per_kv_head"; false for anything else. */
bool grid_kind_from_string(const std::string& s, GridKind& out);
/** True for the grids whose CTAs own key tiles (they walk query tiles). */
bool key_major(GridKind g);

/** The tile a kernel computes at a time (query rows x key rows). */
struct KernelTile {
  int64_t q = 64;
  int64_t k = 64;
  bool operator==(const KernelTile&) const = default;
};

/** CTAs that do the same work; the work is summed over the heads a CTA walks. */
struct CtaClass {
  double full = 0;    // fully visible tiles
  double partial = 0; // partly masked tiles (the kernel masks them element by element); a short edge tile is one
  double visible = 0; // visible fraction of the nominal tile area, summed over the partial tiles
  int heads = 1;      // query heads the CTA walks
  int64_t count = 0;  // CTAs of this class
  double tiles() const { return full + partial; }
};

/**
 * The CTA classes of one attention op for `grid` at tile `tile`. Segments with the same (sequence, query range) share
 * query-major CTAs, segments with the same key range share key-major ones (the kernel planner tiles such rows once);
 * tiles are anchored at the start of each range, as the planner anchors them. CTAs with no tile are dropped.
 */
std::vector<CtaClass> cta_classes(const Op& op, const Workload& w, const MaskGeometry& m, KernelTile tile,
                                  GridKind grid);

} // namespace cpsim
