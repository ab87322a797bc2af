// The executor's view of the attention kernels (kernels/, target cpsim_kernels): one call per IR
// attention op over its rectangles. Buffers are row-major [rows][heads][head_dim] bf16, lse
// [rows][heads] fp32; query head h uses KV head h * kv_heads_total / heads_total (GQA). This adapter
// is the one place that knows the kernels' API; compute_kernels.cpp implements it.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/model/mask_geometry.hpp"

#include <cuda_runtime.h>

#include <vector>

namespace cpsim::backend {

struct HeadBlock {
  const void* ptr = nullptr; // first row, first head held by the buffer
  int head_begin = 0;        // global head index of the buffer's first head
  int heads = 0;             // heads per row held by the buffer
  int elem_bytes = 2;
};

struct AttnCall {
  const MaskGeometry* mask = nullptr;
  const std::vector<SegmentRows>* segments = nullptr; // the launch's rectangles; its address keys the kernel plan
  const GatherLayout* gather = nullptr; // PIT: the slot's packed tiles instead of rectangles
  int slot = 0;
  int head_dim = 0;
  int heads_total = 0;
  int kv_heads_total = 0;
  int head_begin = 0; // query heads [head_begin, head_end) to compute (global indices)
  int head_end = 0;
  HeadBlock q, k, v;
  // forward outputs (rows and heads of the q buffer)
  HeadBlock o, lse;
  // backward inputs and outputs
  HeadBlock out, lse_in, dout;
  HeadBlock dq; // fp32 accumulator (dq += ...) or bf16 (dq = ...)
  bool dq_accumulate = false;
  HeadBlock dk, dv; // rows and heads of the k/v buffers; overwritten
  cudaStream_t stream = nullptr;
};

/** The n-way LSE merge of `inputs` partials (o, lse pairs) into `o_out`, `lse_out` over `rows` rows and heads
 *  [head_begin, head_end): the kernels' merge_lse, chained beyond its 16 inputs. */
struct MergeCall {
  int64_t rows = 0;
  int head_begin = 0, head_end = 0, head_dim = 0;
  std::vector<HeadBlock> o_in, lse_in;
  HeadBlock o_out, lse_out;
  cudaStream_t stream = nullptr;
};
void merge_partials(const MergeCall& c);

/** True when the build has the attention kernels; false: attention ops fail with a clear message. */
bool attention_kernels_available();
/** Builds and uploads the launch's kernel plan now (it may synchronise), so that timed repetitions only launch. */
void prepare_attention(const AttnCall& c);
void attention_forward(const AttnCall& c);
void attention_backward(const AttnCall& c);

} // namespace cpsim::backend
