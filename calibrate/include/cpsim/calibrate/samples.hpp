// Raw calibration measurements: one sample per measured op (or per overlap pair), with what the fit needs to
// compute its features (an attention op's geometry: workload and segments, so that a later kernel model can
// derive other features from the same measurements) and the measured median. They are written whole under results/calibration/ by
// `cpsim calibrate` and read back by `cpsim calibrate --from-raw`, so a fit can be redone, and tested,
// without GPUs.
#pragma once

#include "cpsim/calibrate/profile.hpp"
#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <string>
#include <vector>

namespace cpsim::calib {

/** One measured attention op: the workload it belongs to and the op itself (direction, heads, segments). */
struct KernelSample {
  std::string plan; // the calibration plan it came from
  std::string mask; // full, causal, sliding_window, block_sparse (for reports)
  Workload workload;
  Op op;
  double measured_s = 0;
};

/** One measured merge op: its direction and the traffic merge_traffic_bytes gives it. */
struct MergeSample {
  std::string plan;
  Direction dir = Direction::FORWARD;
  double bytes = 0;
  double measured_s = 0;
};

struct CommSample {
  std::string plan;
  std::string link; // intra_node, inter_node
  std::string op;   // p2p, all_gather, reduce_scatter, all_to_all
  int group = 2;
  int64_t bytes = 0;      // as the IR op states them
  int64_t bytes_sent = 0; // what one member sends
  double measured_s = 0;
};

/** An attention op alone and the same op with traffic beside it; likewise the traffic. */
struct OverlapSample {
  std::string plan;
  double compute_alone_s = 0;
  double compute_overlapped_s = 0;
  double comm_alone_s = 0;
  double comm_overlapped_s = 0;
};

struct RawMeasurements {
  std::string gpu_name;
  int sm_count = 0;
  int gpus = 0;
  std::string hardware;     // description the sweeps were planned for
  std::string hardware_gpu; // its gpu.name
  std::string date_utc;
  std::string git_sha;
  int64_t tile_m = 128;
  int64_t tile_n = 128;
  KernelBuild kernel_build; // the attention kernels that ran (unknown for comm-only runs and old files)
  std::vector<KernelSample> kernels;
  std::vector<MergeSample> merges; // absent from raw files written before 2026-12-02
  std::vector<CommSample> comms;
  std::vector<OverlapSample> overlaps;
  std::vector<std::string> not_calibrated;
};

inline constexpr const char* kRawFormat = "cpsim-calibration-raw";

Json raw_to_json(const RawMeasurements& r);
/** Version 2 stores each attention op's geometry; version 1 (features of the kernel model before 2026-12-07) is read
 *  only without kernel samples (link and overlap runs), else refused naming `--from-run`. */
inline constexpr int kRawVersion = 2;

/** Strict reading; UserError naming the sample and key. */
RawMeasurements raw_from_json(const Json& j, const std::string& where);
RawMeasurements load_raw(const std::string& path);
/**
 * One set of measurements from several runs on the same GPU model (kernel sweeps on one GPU, link sweeps on
 * two, say): samples are joined; a "not calibrated" note about a sweep group that another run did measure is
 * dropped. UserError when the GPU models or tile shapes differ. `names` label the runs in errors.
 */
RawMeasurements merge_raw(const std::vector<RawMeasurements>& runs, const std::vector<std::string>& names);

} // namespace cpsim::calib
