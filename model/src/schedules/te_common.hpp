// What the three TransformerEngine CP variants (schedules.md 3.6-3.8) share: the DualChunkSwap
// layout (= zigzag, seq % 2W == 0) and the masks TE's fused attention can express.
#pragma once

#include "ring_program.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_generator.hpp"

namespace cpsim::te {

/** UserError naming workload.mask.kind unless TE's `scheme` runs it (block-sparse never). */
inline void require_mask(const Scenario& sc, const std::string& scheme, bool sliding_window_ok) {
  const MaskKind k = sc.workload.mask.kind;
  if (is_range_mask(k)) // DCP had to extend TE with per-row ranges for its baselines (schedules.md 5.7)
    throw UserError("'workload.mask.kind' = \"" + to_string(k) + "\": scheme '" + scheme +
                    "' cannot run it (TE's fused attention has no per-row range masks)");
  if (k == MaskKind::BLOCK_SPARSE || (k == MaskKind::SLIDING_WINDOW && !sliding_window_ok))
    throw UserError("'workload.mask.kind' = \"" + to_string(k) + "\": scheme '" + scheme + "' cannot run it (" +
                    (k == MaskKind::BLOCK_SPARSE ? std::string("TE's fused attention has no block-sparse mask")
                                                 : std::string("TE's KV P2P CP asserts no sliding window; "
                                                               "te_allgather and te_a2a support it")) +
                    ")");
}

/** DualChunkSwap (get_batch_on_this_cp_rank): rank r holds chunks r and 2W-1-r of every sequence. */
inline ring::Layout dual_chunk_swap(const Scenario& sc, const std::string& scheme) {
  const int W = sc.parallel.cp;
  require_seq_divisible(sc, 2 * int64_t(W), "scheme '" + scheme + "' (DualChunkSwap) with cp = " + std::to_string(W));
  return ring::zigzag_layout(sc.workload, W);
}

} // namespace cpsim::te
