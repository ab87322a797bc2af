// Kernel cost model: how long one attention or merge op takes on one GPU. An interface, so the
// calibrated model of a later issue replaces the roofline v1 without touching the engines.
#pragma once

#include "cpsim/model/cluster.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

namespace cpsim {

/** FLOPs of an attention op by the flash-attn convention: 4*cells*heads*D, x2.5 for backward
 *  (cells summed over the op's heads for per-head masks). */
double attention_flops(const Op& op, const Workload& w);

/** HBM bytes of a merge op: forward reads the partial O (elem bytes) and read-modify-writes the fp32 O (8) and the
 *  LSEs (12) per row, head and merged partial; backward adds `op.bytes` of gradients. The roofline divides it by
 *  the data-sheet bandwidth; a calibrated profile fits the bandwidth these kernels reach on it. */
double merge_traffic_bytes(const Op& op, const Workload& w);

class KernelCostModel {
public:
  virtual ~KernelCostModel() = default;
  virtual double attention_s(const Op& op) const = 0;
  virtual double merge_s(const Op& op) const = 0;
  /** COMPUTE ops (gather, sparsity predictor): roofline over CUDA-core FLOPs and HBM bytes. */
  virtual double compute_s(const Op& op) const = 0;
};

/**
 * v1: work counted in the kernel's tiles (a partly masked tile costs a full tile), time =
 * max(tile FLOPs / (peak x efficiency), bytes / HBM) + launch overhead.
 */
class RooflineKernelModel final : public KernelCostModel {
public:
  RooflineKernelModel(const GpuSpec& gpu, const Workload& w, int64_t tile_m, int64_t tile_n);
  double attention_s(const Op& op) const override;
  double merge_s(const Op& op) const override;
  double compute_s(const Op& op) const override;
  double tile_flops(Direction dir, int heads) const;

private:
  GpuSpec gpu_;
  Workload w_;
  int64_t tile_m_, tile_n_;
};

} // namespace cpsim
