// Tiny element-wise kernels the executor needs around the attention kernels: deterministic inputs
// addressed by global position (so every rank fills its own shard and the single-GPU reference
// fills the whole tensor with the same values), fills, fp32 accumulation, the two-way LSE merge of
// the forward ring, conversion, and the error reduction of --check. No attention math here.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpsim::backend {

/** rows x heads x dim bf16 values of tensor `tensor_id` at positions pos_begin + i*pos_stride of sequence `seq`. */
void fill_input_bf16(void* dst, int64_t rows, int64_t pos_begin, int64_t pos_stride, int head_begin, int heads, int dim,
                     int tensor_id, int seq, cudaStream_t s);
void fill_f32(void* dst, int64_t n, float value, cudaStream_t s);
/** dst += src, each bf16 (2) or fp32 (4); the sum is formed in fp32 (bf16 accumulators: LoongTrain's later windows). */
void accumulate(void* dst, int dst_elem_bytes, const void* src, int src_elem_bytes, int64_t n, cudaStream_t s);
/** dst = src with element conversion between bf16 (2) and fp32 (4). */
void convert(void* dst, int dst_elem_bytes, const void* src, int src_elem_bytes, int64_t n, cudaStream_t s);
/** dst[r * dst_pitch + c] += src[r * src_pitch + c] for rows x cols elements (pitches in elements; sums in fp32). */
void accumulate_2d(void* dst, int dst_elem_bytes, int64_t dst_pitch, const void* src, int src_elem_bytes, int64_t src_pitch,
                   int64_t rows, int64_t cols, cudaStream_t s);
/** rows x cols elements from src (row pitch src_pitch elements) to dst (dst_pitch), converting bf16 <-> fp32 as needed. */
void convert_2d(void* dst, int dst_elem_bytes, int64_t dst_pitch, const void* src, int src_elem_bytes, int64_t src_pitch,
                int64_t rows, int64_t cols, cudaStream_t s);
/** Per (row, head): (o_acc, lse_acc) <- merge with (o_part, lse_part); `first` copies. Rows whose lse is -inf add nothing. */
void lse_merge2(float* o_acc, float* lse_acc, const void* o_part, int part_elem_bytes, const float* lse_part, int64_t rows,
                int heads, int dim, bool first, cudaStream_t s);
/** Accumulates sum (a-b)^2, sum b^2 and max |a-b| into out[0..2] (doubles, zeroed by the caller) over a rows x cols block. */
void compare_block(const void* a, int a_elem, int64_t a_row_stride, const void* b, int b_elem, int64_t b_row_stride,
                   int64_t rows, int64_t cols, double* out, cudaStream_t s);
/** Spins on the device for about `ns` nanoseconds (used by the hang injection and nothing else). */
void device_sleep(uint64_t ns, cudaStream_t s);

} // namespace cpsim::backend
