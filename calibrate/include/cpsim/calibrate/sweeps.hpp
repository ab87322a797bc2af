// The calibration microbenchmarks as schedule-IR plans: single attention ops of chosen shapes,
// densities and masks on one rank (the ring generator at cp = 1 emits exactly one forward and one
// backward kernel); send/recv and collectives from 1 KiB to 1 GiB on two or more ranks; an attention
// op with traffic beside it. The real-GPU backend executes them like any plan (`cpsim run`), so no
// GPU code exists for calibration, and each plan says which of its ops become which samples.
#pragma once

#include "cpsim/calibrate/samples.hpp"
#include "cpsim/model/scenario.hpp"
#include "cpsim/model/schedule.hpp"

#include <string>
#include <utility>
#include <vector>

namespace cpsim::calib {

/** Ops whose measured medians make one sample: the slowest of them (both ends of a transfer, all members). */
using OpSet = std::vector<std::pair<int, int>>; // (rank, op)

struct KernelProbe {
  OpSet ops;
  KernelSample sample; // features filled, measured_s 0
};
struct MergeProbe {
  OpSet ops;
  MergeSample sample;
};
struct CommProbe {
  OpSet ops;
  CommSample sample;
};
struct OverlapProbe {
  OpSet compute_alone, compute_overlapped, comm_alone, comm_overlapped;
};

struct CalibrationPlan {
  std::string name;
  std::string sweep; // kernel, p2p, all_gather, reduce_scatter, all_to_all, overlap
  Scenario scenario;
  Schedule schedule;
  std::vector<KernelProbe> kernels;
  std::vector<MergeProbe> merges;
  std::vector<CommProbe> comms;
  std::vector<OverlapProbe> overlaps;
};

struct SweepOptions {
  int gpus = 1;       // local GPUs the sweeps may use (communication needs two)
  bool quick = false; // a small grid (minutes), for a first look or a smoke test
  // which groups run: kernel (attention ops), comm (p2p and collectives), overlap
  bool kernel = true;
  bool comm = true;
  bool overlap = true;
};

/** Sets the groups of `o` from "kernel,comm,overlap" (any subset); UserError naming an unknown group. */
void select_sweeps(SweepOptions& o, const std::string& list);

/** One shape of the full kernel sweep: ring at cp = 1 over one sequence (one forward and one backward op). */
struct KernelSweepShape {
  int64_t seq = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  Json mask;
};
/**
 * The kernel sweep (not --quick): lengths x masks, windows of several widths, equal tile counts full and causal,
 * GQA ratios 1/4/8, small one-wave grids, short kernels and 64k-key walks, at head_dim 64 and 128 — each term of
 * the kernel model identified by some samples (docs/calibration.md).
 */
std::vector<KernelSweepShape> kernel_sweep_shapes();

/** Every plan of the sweeps for this hardware (its GPU and intra-node link). */
std::vector<CalibrationPlan> calibration_plans(const ClusterSpec& c, const SweepOptions& o);

/** Message sizes of the communication sweeps: 1 KiB .. 1 GiB, x4 (quick: x16). */
std::vector<int64_t> comm_sizes(bool quick);

/**
 * The probes of a kernel-sweep plan: every attention op of rank 0 a kernel sample, every merge op a merge
 * sample. `calibrate --from-run` rebuilds a committed run's samples from its plan files with it.
 */
void add_kernel_probes(CalibrationPlan& p);

/**
 * Adds the samples of one executed plan to `raw`, reading per-op medians from the measured result
 * (`cpsim run --json`: its ops[] with rank, op, median_s). UserError naming the plan and op when an op is missing.
 */
void add_samples(const CalibrationPlan& plan, const Json& measured, RawMeasurements& raw);

} // namespace cpsim::calib
