// A small, fully specified profile for the calibrate tests, so each test states the parameters it checks.
#pragma once

#include "cpsim/calibrate/profile.hpp"

namespace cpsim::test {

/** One launch per direction: query tiles per head forward; key tiles per KV head and query tiles per head backward. */
inline calib::KernelFit kernel_fit(Direction dir, int head_dim) {
  calib::KernelFit k;
  k.dir = dir;
  k.head_dim = head_dim;
  k.tile = {64, 64};
  k.alone_fraction = 0.7;
  k.launch_s = 5e-6;
  calib::GridFit g;
  g.kind = dir == Direction::FORWARD ? GridKind::Q_PER_HEAD : GridKind::K_PER_KV_HEAD;
  g.ctas_per_sm = 2;
  g.cta_s = 1e-6;
  g.head_s = dir == Direction::FORWARD ? 0 : 0.5e-6;
  g.tile_full_s = 2e-6;
  g.tile_partial_s = 2.4e-6;
  g.partial_visible_s = 0.2e-6;
  k.grids = {g};
  if (dir == Direction::BACKWARD) {
    calib::GridFit dq = g;
    dq.kind = GridKind::Q_PER_HEAD;
    dq.head_s = 0;
    dq.tile_full_s = 1.5e-6;
    k.grids.push_back(dq);
  }
  k.hbm_bytes_per_s = 3e12;
  k.hbm_source = "spec";
  k.tiles = {1, 1e7};
  k.ctas = {1, 1e6};
  k.tokens = {64, 65536};
  k.partial_fraction = {0, 1};
  k.gqa = {1, 8};
  k.quality = {10, 0.01, 0.02};
  k.candidates = {{{64, 64}, {g.kind}, 0.01}};
  return k;
}

inline calib::CommFit comm_fit(const std::string& op, double latency_s, double bw) {
  calib::CommFit c;
  c.link = "intra_node";
  c.op = op;
  c.latency_s = latency_s;
  c.bandwidth_bytes_per_s = bw;
  c.bytes = {1024, 1 << 30};
  c.group = {2, 8};
  c.quality = {11, 0.02, 0.05};
  return c;
}

inline calib::Profile test_profile() {
  calib::Profile p;
  p.name = "test";
  p.gpu_name = "NVIDIA H100 80GB HBM3";
  p.sm_count = 132;
  p.gpus = 2;
  p.hardware = "h100-sxm-8";
  p.hardware_gpu = "NVIDIA H100 80GB HBM3";
  p.date_utc = "2026-11-24 10:00:00 UTC";
  p.git_sha = "abc";
  p.source = "test";
  p.kernel_build = {std::string(64, 'a'), "abc1234"};
  p.kernels = {kernel_fit(Direction::FORWARD, 64), kernel_fit(Direction::BACKWARD, 64)};
  p.comms = {comm_fit("p2p", 8e-6, 300e9), comm_fit("all_to_all", 10e-6, 200e9)};
  p.has_overlap = true;
  p.overlap = {1.1, 1.05, 2};
  return p;
}

} // namespace cpsim::test
