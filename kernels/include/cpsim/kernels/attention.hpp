// The C++ interface of the attention kernels (what the real-GPU backend and the calibration call):
// a plan uploaded once, then forward (O, LSE) and backward (dQ, dK, dV) launches on a stream.
// Tensors are rows of heads of head_dim elements; every pointer is device memory.
#pragma once

#include "cpsim/kernels/block_plan.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cpsim::kernels {

/** A failed CUDA call or a launch the kernels cannot run (unsupported head_dim, dtype). */
class KernelError : public std::runtime_error {
public:
  explicit KernelError(const std::string& what) : std::runtime_error(what) {}
};

enum class DType { BF16, FP16, FP32 };
int dtype_bytes(DType d);

/**
 * A buffer of `rows` x heads x head_dim elements (lse: rows x heads). Element (row, global head h,
 * d) lives at data + row * row_stride + (h - head0) * head_dim + d, in elements of `dtype`.
 */
struct HeadTensor {
  void* data = nullptr;
  int64_t row_stride = 0; // elements between consecutive rows
  int head0 = 0;          // global index of the buffer's first head
  DType dtype = DType::BF16;
};

/** A plan in device memory (owns it). Move-only. */
class DevicePlan {
public:
  DevicePlan() = default;
  DevicePlan(const KernelPlan& plan, const MaskDesc& mask, cudaStream_t stream);
  ~DevicePlan();
  DevicePlan(DevicePlan&& o) noexcept;
  DevicePlan& operator=(DevicePlan&& o) noexcept;
  DevicePlan(const DevicePlan&) = delete;
  DevicePlan& operator=(const DevicePlan&) = delete;

  struct View; // device pointers, see kernels/src/device_plan.hpp
  const View& view() const { return *view_; }
  int64_t q_tiles() const { return n_q_tiles_; }
  int64_t k_tiles() const { return n_k_tiles_; }
  int head_slots() const { return head_slots_; }

private:
  void release();
  void* mem_ = nullptr;
  View* view_ = nullptr;
  int64_t n_q_tiles_ = 0, n_k_tiles_ = 0;
  int head_slots_ = 1;
};

enum class Impl {
  REFERENCE, // one thread per row, scalar fp32: slow, simple, the yardstick
  MMA,       // tensor cores through mma.sync m16n8k16 (FlashAttention-2 structure), sm_80 and sm_90
  WGMMA,     // Hopper warpgroup MMA (wgmma, sm_90a): H100, H200. Not yet verified on a GPU: opt-in only
  FAST       // the default: MMA (becomes WGMMA on sm_90 once the wgmma kernels pass the GPU tests there)
};
std::string to_string(Impl impl);
/** Whether `impl` runs on the current device (WGMMA needs compute capability 9.0); `why` says why not. */
bool impl_available(Impl impl, std::string* why = nullptr);
/** The implementation Impl::FAST resolves to on the current device. */
Impl fast_impl();

struct AttnArgs {
  int head_dim = 128; // 64 or 128
  int head_begin = 0; // query heads [head_begin, head_end), global indices
  int head_end = 0;
  int heads_per_kv = 1; // H / G: query head h reads KV head h / heads_per_kv
  float softmax_scale = 0.f; // 0: 1/sqrt(head_dim)
  DType dtype = DType::BF16; // of q, k, v, o, dout, out (and dq unless it accumulates)
  HeadTensor q, k, v;
  HeadTensor o, lse;              // forward outputs (lse fp32); every planned query row is written
  HeadTensor out, lse_in, dout;   // backward inputs: the final output and LSE, and dO
  HeadTensor dq;                  // fp32 with dq_accumulate (dq += ...), else dtype (dq = ...)
  bool dq_accumulate = false;
  HeadTensor dk, dv;              // written (=) for every planned key row, summed over the query heads of a KV head
  cudaStream_t stream = nullptr;
};

void attention_forward(const AttnArgs& a, const DevicePlan& plan, Impl impl = Impl::FAST);
/** Whether the tensor-core paths (MMA, WGMMA, FAST) can run these arguments (16-byte aligned rows of the forward tensors when o is set,
 *  of the backward ones when dq is set); `why` says what is missing. */
bool fast_path_supported(const AttnArgs& a, std::string* why = nullptr);
void attention_backward(const AttnArgs& a, const DevicePlan& plan, Impl impl = Impl::FAST);

/** True when a CUDA device is usable (tests skip otherwise). */
bool gpu_available(std::string* why = nullptr);

} // namespace cpsim::kernels
