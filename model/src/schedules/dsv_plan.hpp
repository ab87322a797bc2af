// The planning half of DSV (schedules.md 6.3, 6.4): the scheme's options, where the KV-head
// groups go over an HCP group (in order, or Longest-Processing-Time on sparse work), and which key
// tokens a rank's queries need from each SCP chunk. dsv.cpp turns these into the IR.
#pragma once

#include "cpsim/model/mask_geometry.hpp"
#include "cpsim/model/scenario.hpp"

#include <cstdint>
#include <vector>

namespace cpsim::dsv {

/** Proxy queries that share one pass over K_lr in the predictor's kernels (one thread block, a warp each). */
constexpr int64_t kProxyTile = 16;

struct Options {
  int hcp = 1, scp = 1;
  bool aware = true;
  int64_t rank_lr = 16;    // d_lr of the low-rank projections
  int64_t query_group = 8; // queries sharing one proxy's critical KV (2x2x2 voxels)
  bool hcp_inner = true;   // HCP groups on consecutive ranks (the paper's intra-node preference)
};

/** Reads and checks `parallel.*` of a dsv scenario; UserError naming the key otherwise. */
Options read_options(const Scenario& sc);

/** KV-head groups (of H/G query heads) per HCP member: in order (naive) or by LPT on sparse work. */
std::vector<std::vector<int>> place_kv_groups(const Workload& w, const MaskGeometry& mask, int hcp, bool aware);

/**
 * Key tokens the queries `q` of sequence `seq` need from each of `scp` chunks, summed over the KV
 * groups `kv`: per KV group, the union over its query heads of the layout blocks with a visible
 * cell, clipped to each chunk (DSV's `activated` set at the layout's resolution).
 */
std::vector<int64_t> needed_from_chunks(const MaskGeometry& mask, const Workload& w, int seq, TokenRange q,
                                        const std::vector<int>& kv, int scp);

/**
 * Key tokens of chunk `j` (of `scp`) that the query heads of KV group `g` need for queries `q` of sequence `seq`:
 * the layout blocks with a visible cell for any of them, clipped to the chunk, as ascending merged slices.
 */
std::vector<TokenSlice> needed_keys(const MaskGeometry& mask, const Workload& w, int seq, TokenRange q, int g, int scp,
                                    int j);

/** ceil(log2(x)), at least 1: compares per score of a bitonic top-k of k = x. */
int64_t log2_ceil(double x);

} // namespace cpsim::dsv
