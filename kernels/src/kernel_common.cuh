// Device helpers shared by the attention kernels: element types and their conversions, addressing
// of HeadTensors, and the softmax scale.
#pragma once

#include "cpsim/kernels/attention.hpp"
#include "device_plan.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

namespace cpsim::kernels::detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }

template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }

/** Element pointer of (row, global head) in a HeadTensor whose heads hold `width` elements each. */
template <class T> __device__ __forceinline__ T* at(const HeadTensor& t, int64_t row, int head, int width) {
  return static_cast<T*>(t.data) + row * t.row_stride + int64_t(head - t.head0) * width;
}

/** Resolves softmax_scale = 0 to 1/sqrt(head_dim). */
inline float scale_of(const AttnArgs& a) { return a.softmax_scale > 0.f ? a.softmax_scale : 1.f / std::sqrt(float(a.head_dim)); }


} // namespace cpsim::kernels::detail
