// Implementations of predictor_kernels.hpp.
#include "predictor_kernels.hpp"

#include "gpu_check.hpp"

#include <cuda_bf16.h>

namespace cpsim::backend {

namespace {

constexpr int kWarps = kPredictorProxies, kChunk = 64; // keys staged in shared memory at a time

__device__ __forceinline__ uint32_t bin_of(float s) {
  const uint32_t u = __float_as_uint(s);
  return ((u & 0x80000000u) ? ~u : (u | 0x80000000u)) >> 21; // order-preserving, top 11 bits
}

/** Shared memory: the block's K_lr chunk, each warp's proxy estimate vector, each warp's histogram (pass 1). */
struct Smem {
  static size_t bytes(int rank, bool histogram) {
    return size_t(kChunk) * rank * sizeof(float) + size_t(kWarps) * rank * sizeof(float) +
           (histogram ? size_t(kWarps) * kPredictorBins * sizeof(uint32_t) : 0);
  }
};

template <bool kTopk> __global__ void k_predictor(PredictorArgs a) {
  extern __shared__ float smem[];
  float* kc = smem;                       // [kChunk][rank]
  float* qv = smem + kChunk * a.rank;     // [kWarps][rank]
  uint32_t* hist = reinterpret_cast<uint32_t*>(qv + kWarps * a.rank);
  __shared__ uint32_t taken_above[kWarps], taken_bin[kWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t seq = a.block_seq[blockIdx.x], h = a.block_head[blockIdx.x];
  const int64_t proxy = a.block_proxy[blockIdx.x] + warp; // within the sequence
  const bool live = proxy < (a.seq_queries[seq] + a.query_group - 1) / a.query_group;
  const int64_t keys = a.seq_keys[seq], keep = a.keep[seq * a.heads + h];
  const int kvp = a.kv_pos[h];
  const auto* q = static_cast<const __nv_bfloat16*>(a.q_lr);
  const auto* k = static_cast<const __nv_bfloat16*>(a.k_lr);
  const int64_t slot = (a.seq_first_proxy[seq] + proxy) * a.heads + h; // this proxy's threshold entry
  for (int i = lane; i < a.rank; i += 32)
    qv[warp * a.rank + i] = live ? __bfloat162float(q[(a.seq_q_row[seq] + proxy * a.query_group) * a.q_row_elems + h * a.rank + i]) : 0.f;
  uint32_t* my_hist = hist + warp * kPredictorBins;
  uint32_t tbin = 0, above = 0;
  if (!kTopk) {
    for (int i = lane; i < kPredictorBins; i += 32)
      my_hist[i] = 0;
  } else if (live) {
    tbin = a.threshold[2 * slot];
    above = a.threshold[2 * slot + 1];
  }
  if (lane == 0) {
    taken_above[warp] = 0;
    taken_bin[warp] = 0;
  }
  __syncthreads();
  for (int64_t k0 = 0; k0 < keys; k0 += kChunk) {
    const int n = int(keys - k0 < kChunk ? keys - k0 : kChunk);
    for (int i = threadIdx.x; i < n * a.rank; i += blockDim.x)
      kc[i] = __bfloat162float(k[(a.seq_k_row[seq] + k0 + i / a.rank) * a.k_row_elems + kvp * a.rank + i % a.rank]);
    __syncthreads();
    if (live && keep > 0)
      for (int j = lane; j < n; j += 32) {
        float s = 0.f;
        for (int d = 0; d < a.rank; ++d)
          s = fmaf(qv[warp * a.rank + d], kc[j * a.rank + d], s);
        const uint32_t b = bin_of(s);
        if (!kTopk) {
          atomicAdd(&my_hist[b], 1u);
        } else if (b > tbin) {
          const uint32_t at = atomicAdd(&taken_above[warp], 1u);
          a.index[a.index_offset[seq * a.heads + h] + proxy * keep + at] = int32_t(k0 + j);
        } else if (b == tbin) {
          const uint32_t at = atomicAdd(&taken_bin[warp], 1u);
          if (above + at < uint32_t(keep))
            a.index[a.index_offset[seq * a.heads + h] + proxy * keep + above + at] = int32_t(k0 + j);
        }
      }
    __syncthreads();
  }
  if (kTopk || !live || lane != 0)
    return;
  // the bin holding the keep-th largest estimate, scanning from the top
  uint32_t sum = 0, bin = kPredictorBins;
  for (int b = kPredictorBins - 1; b >= 0 && keep > 0; --b) {
    if (sum + my_hist[b] >= uint32_t(keep)) {
      bin = uint32_t(b);
      break;
    }
    sum += my_hist[b];
  }
  a.threshold[2 * slot] = bin;
  a.threshold[2 * slot + 1] = sum;
}

/** 64 rows per block; W in shared memory; a thread per (row, output column) pair, strided. */
__global__ void k_project(__nv_bfloat16* out, const __nv_bfloat16* in, const __nv_bfloat16* w, int64_t rows, int dim, int rank) {
  extern __shared__ float ws[]; // [dim][rank]
  for (int i = threadIdx.x; i < dim * rank; i += blockDim.x)
    ws[i] = __bfloat162float(w[i]);
  __syncthreads();
  const int64_t r0 = int64_t(blockIdx.x) * 64;
  for (int i = threadIdx.x; i < 64 * rank; i += blockDim.x) {
    const int64_t r = r0 + i / rank;
    const int j = i % rank;
    if (r >= rows)
      continue;
    float acc = 0.f;
    for (int d = 0; d < dim; ++d)
      acc = fmaf(__bfloat162float(in[r * dim + d]), ws[d * rank + j], acc);
    out[r * rank + j] = __float2bfloat16(acc);
  }
}

template <bool kTopk> void launch(const PredictorArgs& a, cudaStream_t s) {
  if (a.blocks == 0)
    return;
  const size_t smem = Smem::bytes(a.rank, !kTopk);
  BK_CUDA_CHECK(cudaFuncSetAttribute(k_predictor<kTopk>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  k_predictor<kTopk><<<unsigned(a.blocks), kWarps * 32, smem, s>>>(a);
  BK_CUDA_CHECK(cudaGetLastError());
}

} // namespace

void project_rows(void* out, const void* in, const void* w, int64_t rows, int dim, int rank, cudaStream_t s) {
  if (rows == 0)
    return;
  const size_t smem = size_t(dim) * rank * sizeof(float);
  BK_CUDA_CHECK(cudaFuncSetAttribute(k_project, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  k_project<<<unsigned((rows + 63) / 64), 256, smem, s>>>(static_cast<__nv_bfloat16*>(out), static_cast<const __nv_bfloat16*>(in),
                                                          static_cast<const __nv_bfloat16*>(w), rows, dim, rank);
  BK_CUDA_CHECK(cudaGetLastError());
}

void predictor_thresholds(const PredictorArgs& a, cudaStream_t s) { launch<false>(a, s); }
void predictor_topk(const PredictorArgs& a, cudaStream_t s) { launch<true>(a, s); }

} // namespace cpsim::backend
