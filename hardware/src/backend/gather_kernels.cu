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

template <class W> __device__ void copy_rows(const char* s, int64_t s_pitch, char* d, int64_t d_pitch, int64_t rows, int64_t row_bytes) {
  const int64_t words = row_bytes / int64_t(sizeof(W));
  for (int64_t i = threadIdx.x; i < rows * words; i += blockDim.x) {
    const int64_t r = i / words, c = i % words;
    reinterpret_cast<W*>(d + r * d_pitch)[c] = reinterpret_cast<const W*>(s + r * s_pitch)[c];
  }
}

__global__ void k_gather(MicrotileGather a) {
  const int64_t e = blockIdx.x;
  const int64_t first = max(int64_t(a.index[e]) * a.granularity, a.entry_lo[e]);
  const int64_t rows = min((int64_t(a.index[e]) + 1) * a.granularity, a.entry_hi[e]) - first;
  for (int p = 0; p < a.n_planes; ++p) {
    const GatherPlane& pl = a.planes[p];
    const char* s = pl.src + (a.entry_src_row0[e] + first) * pl.src_row_bytes + int64_t(a.entry_head[e]) * pl.head_bytes;
    char* d = pl.dst + a.entry_dst_row[e] * pl.dst_row_bytes;
    if (pl.src_row_bytes % 16 == 0 && pl.dst_row_bytes % 16 == 0 && pl.head_bytes % 16 == 0)
      copy_rows<uint4>(s, pl.src_row_bytes, d, pl.dst_row_bytes, rows, pl.dst_row_bytes);
    else
      copy_rows<uint32_t>(s, pl.src_row_bytes, d, pl.dst_row_bytes, rows, pl.dst_row_bytes);
  }
}

__global__ void k_merge_packed(PackedPartialMerge a) {
  const int64_t u = blockIdx.x;
  const int64_t c0 = a.copy_begin[u], c1 = a.copy_begin[u + 1];
  auto* o = reinterpret_cast<__nv_bfloat16*>(a.o) + a.unit_o[u];
  const int64_t n = int64_t(a.unit_heads) * a.head_dim;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int h = int(i / a.head_dim);
    float m = -INFINITY;
    for (int64_t c = c0; c < c1; ++c)
      m = fmaxf(m, a.lse_part[a.copy_src[c] * a.unit_heads + h]);
    float sum = 0.f, acc = 0.f;
    if (m != -INFINITY)
      for (int64_t c = c0; c < c1; ++c) {
        const float w = expf(a.lse_part[a.copy_src[c] * a.unit_heads + h] - m); // -inf partials weigh 0
        sum += w;
        acc += w * __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(a.o_part)[a.copy_src[c] * n + i]);
      }
    o[i] = __float2bfloat16(m == -INFINITY ? 0.f : acc / sum);
    if (i % a.head_dim == 0)
      a.lse[a.unit_lse[u] + h] = m == -INFINITY ? -INFINITY : m + logf(sum);
  }
}

__global__ void k_scatter(GradientScatter a) {
  const int64_t u = blockIdx.x;
  const int64_t c0 = a.copy_begin[u], c1 = a.copy_begin[u + 1];
  for (int plane = 0; plane < a.planes; ++plane) {
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
  if (a.n_planes < 1 || a.n_planes > MicrotileGather::kMaxPlanes)
    throw GpuError("PIT gather: " + std::to_string(a.n_planes) + " planes (1 to 4)");
  for (int p = 0; p < a.n_planes; ++p) {
    const GatherPlane& pl = a.planes[p];
    if (pl.src_row_bytes % 4 != 0 || pl.dst_row_bytes % 4 != 0 || pl.head_bytes % 4 != 0)
      throw GpuError("PIT gather: plane " + std::to_string(p) + " has rows of " + std::to_string(pl.dst_row_bytes) +
                     " bytes, not 4-byte aligned");
  }
  k_gather<<<unsigned(a.entries), kThreads, 0, s>>>(a);
  BK_CUDA_CHECK(cudaGetLastError());
}

void merge_packed_partials(const PackedPartialMerge& a, cudaStream_t s) {
  if (a.units == 0)
    return;
  k_merge_packed<<<unsigned(a.units), 128, 0, s>>>(a);
  BK_CUDA_CHECK(cudaGetLastError());
}

void scatter_gradients(const GradientScatter& a, cudaStream_t s) {
  if (a.units == 0)
    return;
  k_scatter<<<unsigned(a.units), 128, 0, s>>>(a);
  BK_CUDA_CHECK(cudaGetLastError());
}

} // namespace cpsim::backend
