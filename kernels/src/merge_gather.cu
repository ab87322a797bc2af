// The n-way LSE merge (DCP's fused form, with -inf for rows no partial reached) and the row/block
// gathers. Both are memory-bound one-pass kernels: one CTA per (row, head) for the merge, one per
// row for the gathers.
#include "cpsim/kernels/merge_gather.hpp"

#include "cuda_check.hpp"
#include "kernel_common.cuh"

namespace cpsim::kernels {

namespace {

constexpr int kMaxMerge = 16;

struct MergeParams {
  HeadTensor o_in[kMaxMerge];
  HeadTensor lse_in[kMaxMerge];
  HeadTensor o_out, lse_out;
  int n = 0, head_begin = 0, head_dim = 0;
};

__device__ __forceinline__ float load_f(const HeadTensor& t, int64_t row, int head, int width, int d) {
  switch (t.dtype) {
  case DType::BF16: return __bfloat162float(detail::at<__nv_bfloat16>(t, row, head, width)[d]);
  case DType::FP16: return __half2float(detail::at<__half>(t, row, head, width)[d]);
  default: return detail::at<float>(t, row, head, width)[d];
  }
}

__device__ __forceinline__ void store_f(const HeadTensor& t, int64_t row, int head, int width, int d, float x) {
  switch (t.dtype) {
  case DType::BF16: detail::at<__nv_bfloat16>(t, row, head, width)[d] = __float2bfloat16_rn(x); break;
  case DType::FP16: detail::at<__half>(t, row, head, width)[d] = __float2half_rn(x); break;
  default: detail::at<float>(t, row, head, width)[d] = x;
  }
}

__global__ void merge_kernel(MergeParams p) {
  const int64_t row = blockIdx.x;
  const int h = p.head_begin + int(blockIdx.y), d = threadIdx.x;
  float lse[kMaxMerge];
  float mx = -INFINITY;
  for (int i = 0; i < p.n; ++i) {
    lse[i] = *detail::at<float>(p.lse_in[i], row, h, 1);
    if (isfinite(lse[i]))
      mx = fmaxf(mx, lse[i]);
  }
  float L = -INFINITY;
  if (mx != -INFINITY) {
    float sum = 0.f;
    for (int i = 0; i < p.n; ++i)
      if (isfinite(lse[i]))
        sum += expf(lse[i] - mx);
    L = mx + logf(sum);
  }
  float acc = 0.f;
  for (int i = 0; i < p.n && L != -INFINITY; ++i)
    if (isfinite(lse[i]))
      acc += expf(lse[i] - L) * load_f(p.o_in[i], row, h, p.head_dim, d);
  __syncthreads(); // every thread has read the inputs before lse_out/o_out (which may alias them) change
  store_f(p.o_out, row, h, p.head_dim, d, acc);
  if (d == 0)
    *detail::at<float>(p.lse_out, row, h, 1) = L;
}

__global__ void gather_rows_kernel(char* dst, int64_t dst_stride, const char* src, int64_t src_stride, int64_t row_bytes,
                                   const int64_t* index, int64_t src_rows, int64_t block_rows, bool vec16) {
  const int64_t r = blockIdx.x;
  const int64_t s = block_rows > 0 ? index[r / block_rows] * block_rows + r % block_rows : index[r];
  char* d = dst + r * dst_stride;
  const bool valid = src_rows < 0 || s < src_rows;
  if (vec16) {
    for (int64_t i = threadIdx.x; i < row_bytes / 16; i += blockDim.x)
      reinterpret_cast<uint4*>(d)[i] = valid ? reinterpret_cast<const uint4*>(src + s * src_stride)[i] : make_uint4(0, 0, 0, 0);
  } else {
    for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x)
      d[i] = valid ? src[s * src_stride + i] : char(0);
  }
}

bool all16(const void* a, const void* b, int64_t x, int64_t y, int64_t z) {
  return reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0 && x % 16 == 0 && y % 16 == 0 &&
         z % 16 == 0;
}

} // namespace

void merge_lse(const MergeArgs& a) {
  const int n = int(a.o_in.size());
  if (n < 1 || n > kMaxMerge || a.lse_in.size() != a.o_in.size())
    throw KernelError("merge_lse: " + std::to_string(n) + " outputs and " + std::to_string(a.lse_in.size()) +
                      " LSEs given; need the same number, 1 to " + std::to_string(kMaxMerge));
  if (a.head_dim < 1 || a.head_dim > 1024 || a.head_end <= a.head_begin || a.rows < 0)
    throw KernelError("merge_lse: head_dim " + std::to_string(a.head_dim) + ", heads [" + std::to_string(a.head_begin) + ", " +
                      std::to_string(a.head_end) + ") or rows " + std::to_string(a.rows) + " out of range");
  for (const auto& t : a.lse_in)
    if (t.dtype != DType::FP32)
      throw KernelError("merge_lse: every LSE input must be fp32");
  if (a.lse_out.dtype != DType::FP32)
    throw KernelError("merge_lse: the LSE output must be fp32");
  if (a.rows == 0)
    return;
  MergeParams p;
  for (int i = 0; i < n; ++i) {
    p.o_in[i] = a.o_in[size_t(i)];
    p.lse_in[i] = a.lse_in[size_t(i)];
  }
  p.o_out = a.o_out;
  p.lse_out = a.lse_out;
  p.n = n;
  p.head_begin = a.head_begin;
  p.head_dim = a.head_dim;
  merge_kernel<<<dim3(unsigned(a.rows), unsigned(a.head_end - a.head_begin)), unsigned(a.head_dim), 0, a.stream>>>(p);
  KN_LAUNCH_CHECK(merge_kernel);
}

void gather_rows(void* dst, int64_t dst_row_stride_bytes, const void* src, int64_t src_row_stride_bytes, int64_t row_bytes,
                 const int64_t* index, int64_t n, cudaStream_t stream) {
  if (n < 0 || row_bytes < 0)
    throw KernelError("gather_rows: negative row count or row size");
  if (n == 0 || row_bytes == 0)
    return;
  const bool v = all16(dst, src, dst_row_stride_bytes, src_row_stride_bytes, row_bytes);
  gather_rows_kernel<<<unsigned(n), 128, 0, stream>>>(static_cast<char*>(dst), dst_row_stride_bytes, static_cast<const char*>(src),
                                                      src_row_stride_bytes, row_bytes, index, -1, 0, v);
  KN_LAUNCH_CHECK(gather_rows_kernel);
}

void gather_blocks(void* dst, const void* src, int64_t row_bytes, int64_t block_rows, int64_t src_rows, const int64_t* index,
                   int64_t n_blocks, cudaStream_t stream) {
  if (n_blocks < 0 || row_bytes < 0 || block_rows < 1 || src_rows < 0)
    throw KernelError("gather_blocks: negative size or block_rows < 1");
  if (n_blocks == 0 || row_bytes == 0)
    return;
  const bool v = all16(dst, src, row_bytes, row_bytes, row_bytes);
  gather_rows_kernel<<<unsigned(n_blocks * block_rows), 128, 0, stream>>>(static_cast<char*>(dst), row_bytes,
                                                                          static_cast<const char*>(src), row_bytes, row_bytes,
                                                                          index, src_rows, block_rows, v);
  KN_LAUNCH_CHECK(gather_rows_kernel);
}

} // namespace cpsim::kernels
