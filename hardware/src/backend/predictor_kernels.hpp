// DSV's sparsity predictor on the GPU (schedules.md 6.1, 6.2): the low-rank projections of q and k, then the
// rank-d_lr estimate of QK^T for one proxy query per
// query group against every key of its sequence, on CUDA cores, in two passes as DSV does for large k. The first
// finds, per proxy, the histogram bin (11 bits of the ordered float) of its k-th largest estimate; the second
// recomputes the estimates and writes the indices of the k keys at or above that bin (ties inside the bin broken
// by arrival). A thread block serves 16 proxies of one head, a warp each, sharing one pass over K_lr.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpsim::backend {

constexpr int kPredictorProxies = 16; // proxies per thread block (= dsv::kProxyTile, what the IR prices)
constexpr int kPredictorBins = 2048;

struct PredictorArgs {
  const void* q_lr = nullptr; // bf16 [rows][heads][rank]
  const void* k_lr = nullptr; // bf16 [rows][kv heads][rank]
  int64_t q_row_elems = 0, k_row_elems = 0;
  int rank = 0, heads = 0;
  int64_t query_group = 0;
  const int64_t* block_seq = nullptr;   // per thread block: sequence, head, first proxy of the sequence
  const int64_t* block_head = nullptr;
  const int64_t* block_proxy = nullptr;
  int64_t blocks = 0;
  const int64_t* seq_q_row = nullptr;   // per sequence
  const int64_t* seq_queries = nullptr;
  const int64_t* seq_first_proxy = nullptr;
  const int64_t* seq_k_row = nullptr;
  const int64_t* seq_keys = nullptr;
  const int32_t* kv_pos = nullptr;      // per head: its KV head's position in a k_lr row
  const int64_t* keep = nullptr;        // per (sequence, head)
  const int64_t* index_offset = nullptr; // per (sequence, head)
  uint32_t* threshold = nullptr;        // per (proxy, head): {bin, estimates above the bin}
  int32_t* index = nullptr;             // top-k output
};

/** out[m][0..rank) = sum_d in[m][d] W[d][j] for m < rows (bf16 in and out, fp32 sums): the low-rank projection of
 *  every (row, head) vector, on CUDA cores like the rest of the predictor. */
void project_rows(void* out, const void* in, const void* w, int64_t rows, int dim, int rank, cudaStream_t s);

/** Pass 1: the threshold bin of every proxy. */
void predictor_thresholds(const PredictorArgs& a, cudaStream_t s);
/** Pass 2: the indices of every proxy's top keys. */
void predictor_topk(const PredictorArgs& a, cudaStream_t s);

} // namespace cpsim::backend
