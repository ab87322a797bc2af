// The device-side view of a DevicePlan: plain pointers and counts, passed to kernels by value.
// The visibility rule here is MaskDesc::visible, the same rule the planner and the CPU reference use.
#pragma once

#include "cpsim/kernels/attention.hpp"

#include <cstdint>

namespace cpsim::kernels {

struct DevicePlan::View {
  const TileRange* q_tiles = nullptr;
  const TileRange* k_tiles = nullptr;
  const int32_t* fwd_off = nullptr;
  const int32_t* fwd_nfull = nullptr;
  const int32_t* fwd_idx = nullptr;
  const int32_t* bwd_off = nullptr;
  const int32_t* bwd_nfull = nullptr;
  const int32_t* bwd_idx = nullptr;
  const int32_t* q_order = nullptr; // launch order of the fast kernels (KernelPlan::q_order)
  const int32_t* k_order = nullptr;
  int32_t n_q = 0, n_k = 0, head_slots = 1;
  int32_t causal = 0;
  int64_t window = 0;
  int64_t layout_block = 0;
  const uint8_t* bits = nullptr;
  const int64_t* bits_off = nullptr; // per sequence
  const int64_t* n_blocks = nullptr;  // per sequence
  // per-row key intervals (MaskDesc::row_ranges): 4 values per query position from ranges + ranges_off[seq];
  // ranges_off[seq] < 0 (or no ranges at all) for a sequence without them
  const int32_t* ranges = nullptr;
  const int64_t* ranges_off = nullptr;
  int32_t n_range_seqs = 0;
};

#ifdef __CUDACC__
__device__ __forceinline__ bool plan_visible(const DevicePlan::View& v, int seq, int64_t i, int64_t j) {
  if (v.causal && j > i)
    return false;
  if (v.window > 0 && i - j >= v.window)
    return false;
  if (seq < v.n_range_seqs) {
    const int64_t o = v.ranges_off[seq];
    if (o >= 0) {
      const int32_t* r = v.ranges + o + 4 * i;
      if (!((j >= r[0] && j < r[1]) || (j >= r[2] && j < r[3])))
        return false;
    }
  }
  if (v.layout_block > 0) {
    const int64_t nb = v.n_blocks[seq];
    return v.bits[v.bits_off[seq] + (i / v.layout_block) * nb + j / v.layout_block] != 0;
  }
  return true;
}
#endif

} // namespace cpsim::kernels
