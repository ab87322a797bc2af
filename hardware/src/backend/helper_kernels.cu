// Implementations of helper_kernels.hpp; grid-stride loops, one thread per element.
#include "helper_kernels.hpp"

#include "gpu_check.hpp"

#include <cuda_bf16.h>

#include <cmath>

namespace cpsim::backend {

namespace {
constexpr int kThreads = 256;

int blocks_for(int64_t n) { return int(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8)); }

__device__ float load(const void* p, int elem, int64_t i) {
  return elem == 2 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ void store(void* p, int elem, int64_t i, float v) {
  if (elem == 2)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
  else
    static_cast<float*>(p)[i] = v;
}

__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return uint32_t(x);
}

__global__ void k_fill_input(__nv_bfloat16* dst, int64_t rows, int64_t pos0, int64_t stride, int h0, int heads, int dim,
                             int tensor, int seq) {
  const int64_t n = rows * heads * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / (heads * dim);
    int h = int(i / dim % heads), d = int(i % dim);
    uint64_t key = (((uint64_t(tensor) * 131 + uint64_t(seq)) * 0x100000001ULL + uint64_t(pos0 + r * stride)) * 4099 +
                    uint64_t(h0 + h)) * 1031 + uint64_t(d);
    float u = float(mix(key) >> 8) * (1.0f / 16777216.0f); // [0, 1)
    dst[i] = __float2bfloat16(2.0f * u - 1.0f);
  }
}

__global__ void k_fill_f32(float* dst, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = v;
}

__global__ void k_convert(void* dst, int de, const void* src, int se, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store(dst, de, i, load(src, se, i));
}

__global__ void k_convert_2d(void* dst, int de, int64_t dp, const void* src, int se, int64_t sp, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    store(dst, de, r * dp + c, load(src, se, r * sp + c));
  }
}

__global__ void k_accumulate_2d(void* dst, int de, int64_t dp, const void* src, int se, int64_t sp, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    store(dst, de, r * dp + c, load(dst, de, r * dp + c) + load(src, se, r * sp + c));
  }
}

__device__ float merged_lse(float la, float lb) {
  float m = fmaxf(la, lb);
  return m == -INFINITY ? -INFINITY : m + log1pf(expf(fminf(la, lb) - m));
}

// Two launches, output first: the lse accumulator may change only after every element of its row has read it.
__global__ void k_lse_merge_o(float* o, const float* lse, const void* op, int pe, const float* lp, int64_t rows,
                              int heads, int dim, bool first) {
  const int64_t n = rows * heads * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rh = i / dim; // lse is [rows][heads]
    float lb = lp[rh], ob = load(op, pe, i);
    if (first) {
      o[i] = lb == -INFINITY ? 0.f : ob;
      continue;
    }
    float la = lse[rh], l = merged_lse(la, lb);
    float wa = la == -INFINITY ? 0.f : expf(la - l), wb = lb == -INFINITY ? 0.f : expf(lb - l);
    o[i] = wa * o[i] + wb * ob;
  }
}

__global__ void k_lse_merge_l(float* lse, const float* lp, int64_t n, bool first) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    lse[i] = first ? lp[i] : merged_lse(lse[i], lp[i]);
}

__global__ void k_compare(const void* a, int ae, int64_t as, const void* b, int be, int64_t bs, int64_t rows, int64_t cols,
                          double* out) {
  double se = 0, sb = 0;
  float mx = 0;
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / cols, c = i % cols;
    float x = load(a, ae, r * as + c), y = load(b, be, r * bs + c);
    float d = x - y;
    if (isnan(d) || isinf(d) && !(isinf(x) && isinf(y) && x == y))
      d = INFINITY;
    else if (isinf(x) && isinf(y))
      d = 0, y = 0;
    se += double(d) * d;
    sb += double(y) * y;
    mx = fmaxf(mx, fabsf(d));
  }
  atomicAdd(&out[0], se);
  atomicAdd(&out[1], sb);
  atomicMax(reinterpret_cast<unsigned long long*>(&out[2]), __double_as_longlong(double(mx))); // non-negative doubles order like integers
}

__global__ void k_sleep(uint64_t ns) {
  uint64_t t0 = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (uint64_t t = t0; t - t0 < ns;)
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
}
} // namespace

void fill_input_bf16(void* dst, int64_t rows, int64_t pos_begin, int64_t pos_stride, int head_begin, int heads, int dim,
                     int tensor_id, int seq, cudaStream_t s) {
  int64_t n = rows * heads * dim;
  if (n == 0)
    return;
  k_fill_input<<<blocks_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(dst), rows, pos_begin, pos_stride,
                                                  head_begin, heads, dim, tensor_id, seq);
  BK_CUDA_CHECK(cudaGetLastError());
}

void fill_f32(void* dst, int64_t n, float value, cudaStream_t s) {
  if (n == 0)
    return;
  k_fill_f32<<<blocks_for(n), kThreads, 0, s>>>(static_cast<float*>(dst), n, value);
  BK_CUDA_CHECK(cudaGetLastError());
}

void accumulate(void* dst, int dst_elem_bytes, const void* src, int src_elem_bytes, int64_t n, cudaStream_t s) {
  accumulate_2d(dst, dst_elem_bytes, n, src, src_elem_bytes, n, 1, n, s); // one row of n elements
}

void convert(void* dst, int dst_elem_bytes, const void* src, int src_elem_bytes, int64_t n, cudaStream_t s) {
  if (n == 0)
    return;
  if (dst_elem_bytes == src_elem_bytes) {
    BK_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * size_t(dst_elem_bytes), cudaMemcpyDeviceToDevice, s));
    return;
  }
  k_convert<<<blocks_for(n), kThreads, 0, s>>>(dst, dst_elem_bytes, src, src_elem_bytes, n);
  BK_CUDA_CHECK(cudaGetLastError());
}

void accumulate_2d(void* dst, int dst_elem_bytes, int64_t dst_pitch, const void* src, int src_elem_bytes, int64_t src_pitch,
                   int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0)
    return;
  k_accumulate_2d<<<blocks_for(rows * cols), kThreads, 0, s>>>(dst, dst_elem_bytes, dst_pitch, src, src_elem_bytes, src_pitch,
                                                               rows, cols);
  BK_CUDA_CHECK(cudaGetLastError());
}

void convert_2d(void* dst, int dst_elem_bytes, int64_t dst_pitch, const void* src, int src_elem_bytes, int64_t src_pitch,
                int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0)
    return;
  if (dst_elem_bytes == src_elem_bytes) {
    const size_t e = size_t(dst_elem_bytes);
    BK_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(dst_pitch) * e, src, size_t(src_pitch) * e, size_t(cols) * e, size_t(rows),
                                    cudaMemcpyDeviceToDevice, s));
    return;
  }
  k_convert_2d<<<blocks_for(rows * cols), kThreads, 0, s>>>(dst, dst_elem_bytes, dst_pitch, src, src_elem_bytes, src_pitch,
                                                            rows, cols);
  BK_CUDA_CHECK(cudaGetLastError());
}

void lse_merge2(float* o_acc, float* lse_acc, const void* o_part, int part_elem_bytes, const float* lse_part, int64_t rows,
                int heads, int dim, bool first, cudaStream_t s) {
  int64_t n = rows * heads * dim;
  if (n == 0)
    return;
  k_lse_merge_o<<<blocks_for(n), kThreads, 0, s>>>(o_acc, lse_acc, o_part, part_elem_bytes, lse_part, rows, heads, dim,
                                                   first);
  BK_CUDA_CHECK(cudaGetLastError());
  k_lse_merge_l<<<blocks_for(rows * heads), kThreads, 0, s>>>(lse_acc, lse_part, rows * heads, first);
  BK_CUDA_CHECK(cudaGetLastError());
}

void compare_block(const void* a, int a_elem, int64_t a_row_stride, const void* b, int b_elem, int64_t b_row_stride,
                   int64_t rows, int64_t cols, double* out, cudaStream_t s) {
  if (rows * cols == 0)
    return;
  k_compare<<<blocks_for(rows * cols) / 8 + 1, kThreads, 0, s>>>(a, a_elem, a_row_stride, b, b_elem, b_row_stride, rows,
                                                                 cols, out);
  BK_CUDA_CHECK(cudaGetLastError());
}

void device_sleep(uint64_t ns, cudaStream_t s) {
  k_sleep<<<1, 1, 0, s>>>(ns);
  BK_CUDA_CHECK(cudaGetLastError());
}

} // namespace cpsim::backend
