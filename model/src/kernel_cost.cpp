// Roofline v1 of the kernel cost model (see kernel_cost.hpp).
#include "cpsim/model/kernel_cost.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

namespace {
constexpr double kBwdFactor = 2.5; // five GEMMs recomputing S, flash-attn convention
// Non-tensor (CUDA-core) FP32 peak relative to the dense bf16 tensor peak: 19.5/312 on A100,
// 67/989 on H100 SXM. The DSV predictor's slim GEMM and its top-k run there (schedules.md 6.2).
constexpr double kCudaCoreFraction = 1.0 / 16.0;
}

double attention_flops(const Op& op, const Workload& w) {
  double f = 4.0 * double(op.cells_all_heads()) * w.head_dim;
  return op.dir == Direction::BACKWARD ? f * kBwdFactor : f;
}

RooflineKernelModel::RooflineKernelModel(const GpuSpec& gpu, const Workload& w, int64_t tile_m, int64_t tile_n)
    : gpu_(gpu), w_(w), tile_m_(tile_m), tile_n_(tile_n) {}

double RooflineKernelModel::tile_flops(Direction dir, int heads) const {
  double f = 4.0 * double(tile_m_) * double(tile_n_) * heads * w_.head_dim;
  return dir == Direction::BACKWARD ? f * kBwdFactor : f;
}

double RooflineKernelModel::attention_s(const Op& op) const {
  CPSIM_ASSERT(op.kind == OpKind::ATTENTION, "attention_s on a non-attention op");
  double eff = op.dir == Direction::FORWARD ? gpu_.attn_fwd_efficiency : gpu_.attn_bwd_efficiency;
  double compute_s = double(op.tiles_all_heads().total()) * tile_flops(op.dir, 1) / (gpu_.peak_flops * eff);
  // Memory traffic: each query row block reads Q and writes O once; K/V are read per query tile row.
  int64_t q_rows = 0, k_rows = 0;
  for (const auto& s : op.segments) {
    q_rows += s.q.size();
    k_rows += s.k.size();
  }
  int kv_heads = std::max(1, op.heads() * w_.kv_heads / w_.heads);
  double e = w_.elem_bytes();
  double bytes = (2.0 * q_rows * op.heads() + 2.0 * k_rows * kv_heads) * w_.head_dim * e;
  if (op.dir == Direction::BACKWARD)
    bytes *= 2.5;
  double memory_s = bytes / gpu_.hbm_bytes_per_s;
  return gpu_.launch_overhead_s + std::max(compute_s, memory_s);
}

double RooflineKernelModel::compute_s(const Op& op) const {
  CPSIM_ASSERT(op.kind == OpKind::COMPUTE, "compute_s on a non-compute op");
  double flops_s = double(op.flops) / (gpu_.peak_flops * kCudaCoreFraction);
  return gpu_.launch_overhead_s + std::max(flops_s, double(op.bytes) / gpu_.hbm_bytes_per_s);
}

double merge_traffic_bytes(const Op& op, const Workload& w) {
  CPSIM_ASSERT(op.kind == OpKind::MERGE, "merge bytes of a non-merge op");
  if (op.dir == Direction::BACKWARD)
    return double(op.bytes);
  return double(op.rows) * op.heads() * (w.head_dim * (w.elem_bytes() + 8.0) + 12.0) * std::max(1, op.inputs - 1);
}

double RooflineKernelModel::merge_s(const Op& op) const {
  return gpu_.launch_overhead_s + merge_traffic_bytes(op, w_) / gpu_.hbm_bytes_per_s;
}

} // namespace cpsim
