// Features and closed form of the calibrated kernel model (see kernel_features.hpp, profile.hpp).
#include "cpsim/calibrate/kernel_features.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim::calib {

KernelFeatures kernel_features(const Op& op, const Workload& w, int64_t tile_m, int64_t tile_n) {
  CPSIM_ASSERT(op.kind == OpKind::ATTENTION, "kernel features of a non-attention op");
  KernelFeatures x;
  x.dir = op.dir;
  x.head_dim = w.head_dim;
  const int64_t h = op.heads();
  int64_t q_rows = 0, k_rows = 0, blocks = 0;
  for (const auto& s : op.segments) {
    q_rows += s.q.size();
    k_rows += s.k.size();
    // flash-attn launches one CTA per query tile forward and per key tile backward
    blocks += op.dir == Direction::FORWARD ? (s.q.size() + tile_m - 1) / tile_m : (s.k.size() + tile_n - 1) / tile_n;
  }
  x.ctas = blocks * h;
  x.full_tiles = op.tiles.full * h;
  x.partial_tiles = op.tiles.partial * h;
  x.tokens = q_rows;
  const int kv_heads = std::max<int>(1, int(h * w.kv_heads / std::max(1, w.heads)));
  x.bytes = (2.0 * double(q_rows) * double(h) + 2.0 * double(k_rows) * kv_heads) * w.head_dim * w.elem_bytes();
  if (op.dir == Direction::BACKWARD)
    x.bytes *= 2.5; // dO, dQ, dK, dV besides the forward's tensors, as the roofline counts them
  return x;
}

int64_t kernel_waves(int64_t ctas, int sm_count, int ctas_per_sm) {
  const int64_t slots = int64_t(std::max(1, sm_count)) * std::max(1, ctas_per_sm);
  return std::max<int64_t>(1, (ctas + slots - 1) / slots);
}

double kernel_compute_s(const KernelFit& f, const KernelFeatures& x, int sm_count) {
  if (x.ctas <= 0)
    return 0;
  const double waves = double(kernel_waves(x.ctas, sm_count, f.ctas_per_sm));
  const double work_per_cta =
      (double(x.full_tiles) * f.tile_full_s + double(x.partial_tiles) * f.tile_partial_s) / double(x.ctas);
  return waves * (f.cta_s + work_per_cta);
}

double kernel_time_s(const KernelFit& f, const KernelFeatures& x, int sm_count) {
  const double memory_s = f.hbm_bytes_per_s > 0 ? x.bytes / f.hbm_bytes_per_s : 0;
  return f.launch_s + std::max(kernel_compute_s(f, x, sm_count), memory_s);
}

} // namespace cpsim::calib
