// The two helpers the sparse and context-parallel schedules need beside attention: the n-way LSE
// merge of partial results over disjoint key sets (schedules.md 1.3, DCP's fused form) and a gather
// of rows or blocks of rows by index (K/V of selected blocks packed into dense tiles).
#pragma once

#include "cpsim/kernels/attention.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace cpsim::kernels {

struct MergeArgs {
  int rows = 0;
  int head_begin = 0, head_end = 0;
  int head_dim = 128;
  std::vector<HeadTensor> o_in;   // n partial outputs (bf16, fp16 or fp32), rows x heads
  std::vector<HeadTensor> lse_in; // their LSEs (fp32)
  HeadTensor o_out, lse_out;      // may alias o_in[0] / lse_in[0]
  cudaStream_t stream = nullptr;
};

/**
 * L = log sum_i exp(L_i) over the partials with finite L_i, O = sum_i exp(L_i - L) O_i. A row with
 * no finite partial gets L = -inf and O = 0. At most 16 inputs per launch.
 */
void merge_lse(const MergeArgs& a);

/** dst row r = src row index[r] for r < n (row_bytes each); index is device memory. */
void gather_rows(void* dst, int64_t dst_row_stride_bytes, const void* src, int64_t src_row_stride_bytes,
                 int64_t row_bytes, const int64_t* index, int64_t n, cudaStream_t stream);
/** dst block b (block_rows rows) = src block index[b]; rows beyond src_rows are zero-filled. */
void gather_blocks(void* dst, const void* src, int64_t row_bytes, int64_t block_rows, int64_t src_rows,
                   const int64_t* index, int64_t n_blocks, cudaStream_t stream);

} // namespace cpsim::kernels
