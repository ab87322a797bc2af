// Implementations of merge_kernels.hpp; grid-stride loops.
#include "merge_kernels.hpp"

#include "gpu_check.hpp"

#include <cuda_bf16.h>

#include <cmath>

namespace cpsim::backend {

namespace {
constexpr int kThreads = 256;
int blocks_for(int64_t n) { return int(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8)); }

__device__ double ld(const void* p, int e, int64_t i) {
  return e == 8 ? static_cast<const double*>(p)[i] : e == 4 ? double(static_cast<const float*>(p)[i])
                                                            : double(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
}
__device__ void st(void* p, int e, int64_t i, double v) {
  if (e == 8)
    static_cast<double*>(p)[i] = v;
  else if (e == 4)
    static_cast<float*>(p)[i] = float(v);
  else
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(float(v));
}

__global__ void k_fold(void* acc, int ae, const float* part, int64_t sr, int64_t ss, int64_t dr, int64_t ds, int64_t rows,
                       int heads) {
  const int64_t n = rows * heads;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / heads, h = i % heads;
    const double a = ld(acc, ae, (dr + r * ds) * heads + h), b = part[(sr + r * ss) * heads + h];
    const double m = fmax(a, b);
    st(acc, ae, (dr + r * ds) * heads + h, m == -INFINITY ? -INFINITY : m + log1p(exp(fmin(a, b) - m)));
  }
}

__global__ void k_correct(void* out, int oe, const void* po, int pe, const float* pl, const void* acc, int ae, int64_t sr,
                          int64_t ss, int64_t dr, int64_t ds, int64_t rows, int heads, int dim) {
  const int64_t n = rows * heads * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / (int64_t(heads) * dim), hd = i % (int64_t(heads) * dim), h = hd / dim;
    const int64_t src = (sr + r * ss) * heads + h, dst = (dr + r * ds) * heads + h;
    const double lp = pl[src];
    if (lp == -INFINITY)
      continue;
    const double w = exp(lp - ld(acc, ae, dst));
    const int64_t o_dst = (dr + r * ds) * int64_t(heads) * dim + hd, o_src = (sr + r * ss) * int64_t(heads) * dim + hd;
    st(out, oe, o_dst, ld(out, oe, o_dst) + w * ld(po, pe, o_src));
  }
}

__global__ void k_to_f32(float* dst, const void* src, int se, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = float(ld(src, se, i));
}

__global__ void k_neg_inf(void* dst, int e, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(dst, e, i, -INFINITY);
}
} // namespace

void lse_fold(void* acc, int acc_elem_bytes, const float* part, int64_t src_row, int64_t src_step, int64_t dst_row,
              int64_t dst_step, int64_t rows, int heads, cudaStream_t s) {
  if (rows * heads == 0)
    return;
  k_fold<<<blocks_for(rows * heads), kThreads, 0, s>>>(acc, acc_elem_bytes, part, src_row, src_step, dst_row, dst_step, rows,
                                                       heads);
  BK_CUDA_CHECK(cudaGetLastError());
}

void out_correction(void* out, int out_elem_bytes, const void* part_o, int part_elem_bytes, const float* part_lse,
                    const void* acc, int acc_elem_bytes, int64_t src_row, int64_t src_step, int64_t dst_row,
                    int64_t dst_step, int64_t rows, int heads, int dim, cudaStream_t s) {
  const int64_t n = rows * heads * dim;
  if (n == 0)
    return;
  k_correct<<<blocks_for(n), kThreads, 0, s>>>(out, out_elem_bytes, part_o, part_elem_bytes, part_lse, acc, acc_elem_bytes,
                                               src_row, src_step, dst_row, dst_step, rows, heads, dim);
  BK_CUDA_CHECK(cudaGetLastError());
}

void lse_to_f32(float* dst, const void* src, int src_elem_bytes, int64_t n, cudaStream_t s) {
  if (n == 0)
    return;
  k_to_f32<<<blocks_for(n), kThreads, 0, s>>>(dst, src, src_elem_bytes, n);
  BK_CUDA_CHECK(cudaGetLastError());
}

void fill_neg_inf(void* dst, int elem_bytes, int64_t n, cudaStream_t s) {
  if (n == 0)
    return;
  k_neg_inf<<<blocks_for(n), kThreads, 0, s>>>(dst, elem_bytes, n);
  BK_CUDA_CHECK(cudaGetLastError());
}

} // namespace cpsim::backend
