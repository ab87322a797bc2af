// Forward merges beyond the two-way ring merge (helper_kernels.hpp): TE p2p's deferred correction, with its running
// LSE in fp64 as TE keeps it, over the rows of one step's partial (a row block of the running LSE and output).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpsim::backend {

/** acc[dst_row + i*dst_step][h] = logaddexp(acc, part[src_row + i*src_step][h]) for i < rows; acc fp32 (4) or fp64 (8). */
void lse_fold(void* acc, int acc_elem_bytes, const float* part, int64_t src_row, int64_t src_step, int64_t dst_row,
              int64_t dst_step, int64_t rows, int heads, cudaStream_t s);
/** out[dst row][h][:] += exp(part_lse - acc) * part_o[src row][h][:] (a -inf partial adds nothing); out bf16 or fp32. */
void out_correction(void* out, int out_elem_bytes, const void* part_o, int part_elem_bytes, const float* part_lse,
                    const void* acc, int acc_elem_bytes, int64_t src_row, int64_t src_step, int64_t dst_row,
                    int64_t dst_step, int64_t rows, int heads, int dim, cudaStream_t s);
/** dst fp32 = src (fp32 or fp64), n elements. */
void lse_to_f32(float* dst, const void* src, int src_elem_bytes, int64_t n, cudaStream_t s);
/** n values of -inf (fp32 or fp64). */
void fill_neg_inf(void* dst, int elem_bytes, int64_t n, cudaStream_t s);

} // namespace cpsim::backend
