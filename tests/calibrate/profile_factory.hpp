// A small, fully specified profile for the calibrate tests, so each test states the parameters it checks.
#pragma once

#include "cpsim/calibrate/profile.hpp"

namespace cpsim::test {

inline calib::KernelFit kernel_fit(Direction dir, int head_dim) {
  calib::KernelFit k;
  k.dir = dir;
  k.head_dim = head_dim;
  k.launch_s = 5e-6;
  k.cta_s = 1e-6;
  k.tile_full_s = 2e-6;
  k.tile_partial_s = 2.4e-6;
  k.ctas_per_sm = 2;
  k.hbm_bytes_per_s = 3e12;
  k.hbm_source = "spec";
  k.tiles = {1, 1e6};
  k.ctas = {1, 1e5};
  k.tokens = {128, 65536};
  k.partial_fraction = {0, 1};
  k.quality = {10, 0.01, 0.02};
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
  p.kernels = {kernel_fit(Direction::FORWARD, 64), kernel_fit(Direction::BACKWARD, 64)};
  p.comms = {comm_fit("p2p", 8e-6, 300e9), comm_fit("all_to_all", 10e-6, 200e9)};
  p.has_overlap = true;
  p.overlap = {1.1, 1.05, 2};
  return p;
}

} // namespace cpsim::test
