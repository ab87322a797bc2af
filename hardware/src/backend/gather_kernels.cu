// Implementations of gather_kernels.hpp.
#include "gather_kernels.hpp"

#include "gpu_check.hpp"

#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>

namespace cpsim::backend {

namespace {
constexpr int kThreads = 256;

__global__ void k_build_index(int32_t* index, const uint8_t* flags, const int64_t* flag_off, const int32_t* n_cand,
                              const int64_t* first_cand, const int64_t* entry_off) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ int base;
  const int64_t item = blockIdx.x;
  const uint8_t* f = flags + flag_off[item];
  const int n = n_cand[item];
  if (threadIdx.x == 0)
    base = 0;
  __syncthreads();
  for (int c0 = 0; c0 < n; c0 += kThreads) {
    const int c = c0 + int(threadIdx.x);
    const int set = c < n && f[c] ? 1 : 0;
    int rank = 0, total = 0;
    Scan(tmp).ExclusiveSum(set, rank, total);
    if (set)
      index[entry_off[item] + base + rank] = int32_t(first_cand[item] + c);
    __syncthreads();
    if (threadIdx.x == 0)
      base += total;
    __syncthreads();
  }
}

__global__ void k_gather(MicrotileGather a) {
  const int64_t e = blockIdx.x;
  const int64_t first = int64_t(a.index[e]) * a.granularity;
  const int64_t rows = min(a.granularity, a.entry_seq_end[e] - first);
  const int64_t chunks = a.copy_bytes / 16;
  for (int plane = 0; plane < 2; ++plane) {
    const char* s = a.src + plane * a.src_plane_bytes + a.entry_src_base[e] + first * a.src_row_bytes;
    char* d = a.dst + plane * a.dst_plane_bytes + a.entry_dst_row[e] * a.dst_row_bytes;
    for (int64_t i = threadIdx.x; i < rows * chunks; i += blockDim.x) {
      const int64_t r = i / chunks, c = i % chunks;
      reinterpret_cast<uint4*>(d + r * a.dst_row_bytes)[c] = reinterpret_cast<const uint4*>(s + r * a.src_row_bytes)[c];
    }
  }
}

__global__ void k_scatter(GradientScatter a) {
  const int64_t u = blockIdx.x;
  const int64_t c0 = a.copy_begin[u], c1 = a.copy_begin[u + 1];
  for (int plane = 0; plane < 2; ++plane) {
    auto* d = reinterpret_cast<__nv_bfloat16*>(a.dst + plane * a.dst_plane_bytes + a.unit_dst[u]);
    for (int64_t i = threadIdx.x; i < a.unit_elems; i += blockDim.x) {
      float sum = 0.f;
      for (int64_t c = c0; c < c1; ++c)
        sum += __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(a.src + plane * a.src_plane_bytes + a.copy_src[c])[i]);
      d[i] = __float2bfloat16(sum);
    }
  }
}
} // namespace

void build_microtile_index(int32_t* index, const uint8_t* flags, const int64_t* flag_off, const int32_t* n_cand,
                           const int64_t* first_cand, const int64_t* entry_off, int64_t items, cudaStream_t s) {
  if (items == 0)
    return;
  k_build_index<<<unsigned(items), kThreads, 0, s>>>(index, flags, flag_off, n_cand, first_cand, entry_off);
  BK_CUDA_CHECK(cudaGetLastError());
}

void gather_microtiles(const MicrotileGather& a, cudaStream_t s) {
  if (a.entries == 0)
    return;
  if (a.copy_bytes % 16 != 0 || a.src_row_bytes % 16 != 0 || a.dst_row_bytes % 16 != 0)
    throw GpuError("PIT gather: rows of " + std::to_string(a.copy_bytes) + " bytes are not 16-byte aligned");
  k_gather<<<unsigned(a.entries), kThreads, 0, s>>>(a);
  BK_CUDA_CHECK(cudaGetLastError());
}

void scatter_gradients(const GradientScatter& a, cudaStream_t s) {
  if (a.units == 0)
    return;
  k_scatter<<<unsigned(a.units), 128, 0, s>>>(a);
  BK_CUDA_CHECK(cudaGetLastError());
}

} // namespace cpsim::backend
