// A calibrated profile: the fitted parameters of the kernel, communication and overlap models for
// one GPU type, the ranges the calibration covered, and where the numbers came from. Written by
// `cpsim calibrate` to hardware/profiles/<name>.json and read (strictly) by every command that
// predicts with --profile. Reading rejects anything it does not understand, naming key and reason.
#pragma once

#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/schedule.hpp"

#include <string>
#include <utility>
#include <vector>

namespace cpsim::calib {

/** Closed interval of a quantity the sweeps covered. */
struct Range {
  double min = 0;
  double max = 0;
  bool contains(double x) const { return x >= min && x <= max; }
  void extend(double x);
  bool empty() const { return min > max; }
  static Range none() { return {1, 0}; }
};

/** Fit quality on the calibration samples themselves (in-sample), as |relative error|. */
struct FitQuality {
  int samples = 0;
  double median_abs_rel_err = 0;
  double p95_abs_rel_err = 0;
};

/**
 * Attention kernel model for one (direction, head_dim) family (see kernel_features.hpp):
 *   t = launch_s + max(waves x (cta_s + work_per_cta), bytes / hbm_bytes_per_s)
 * with work = full_tiles x tile_full_s + partial_tiles x tile_partial_s over all heads, CTAs one
 * per (query-tile row, head) forward and (key-tile column, head) backward, and waves =
 * ceil(ctas / (sm_count x ctas_per_sm)): the last partial wave costs a full wave.
 */
struct KernelFit {
  Direction dir = Direction::FORWARD;
  int head_dim = 128;
  double launch_s = 0;
  double cta_s = 0;
  double tile_full_s = 0;
  double tile_partial_s = 0;
  int ctas_per_sm = 1;
  double hbm_bytes_per_s = 0;
  std::string hbm_source; // "fit" (memory-bound samples seen) or "spec" (none seen: the data sheet's figure)
  Range tiles;            // tiles x heads per op
  Range ctas;
  Range tokens;           // query rows per op
  Range partial_fraction; // partial / all tiles
  FitQuality quality;
};

/**
 * One link type and operation: p2p, all_gather, reduce_scatter or all_to_all over "intra_node" or
 * "inter_node" links. t = correction(bytes_sent) x ((n - 1 or 1) x latency_s + bytes_sent / bandwidth),
 * n the group size, bytes_sent what one member sends; correction interpolates, in log bytes, the
 * measured / fitted ratio at the sizes measured (NCCL's protocol changes are not alpha-beta).
 */
struct CommFit {
  std::string link;
  std::string op;
  double latency_s = 0;
  double bandwidth_bytes_per_s = 0;
  std::vector<std::pair<double, double>> correction; // (bytes_sent, factor), bytes increasing
  Range bytes;                                       // bytes_sent covered
  Range group;                                       // group sizes covered
  FitQuality quality;      // with the per-size correction: near 0 in-sample by construction
  FitQuality line_quality; // latency + bytes / bandwidth alone: how well the alpha-beta line itself fits (samples 0: not recorded)
};

/**
 * Merge kernels of one direction (the LSE merge forward, the gradient additions backward):
 *   t = launch_s + bytes / bytes_per_s, bytes = merge_traffic_bytes(op) (model/kernel_cost.hpp).
 * These are short memory-bound kernels whose launch and tail dominate at CP sizes; the bandwidth is what they
 * reach, not the data sheet's.
 */
struct MergeFit {
  Direction dir = Direction::FORWARD;
  double launch_s = 0;
  double bytes_per_s = 0;
  Range bytes; // merge_traffic_bytes covered
  FitQuality quality;
};

/** Slowdown of an attention kernel while NCCL traffic runs beside it, and of the traffic. */
struct OverlapFit {
  double compute_slowdown = 1;
  double comm_slowdown = 1;
  int samples = 0;
};

struct Profile {
  std::string name;
  std::string gpu_name;
  int sm_count = 0;
  int gpus = 0;             // GPUs the calibration ran on
  std::string hardware;     // the hardware description the sweeps were planned for
  std::string hardware_gpu; // its gpu.name, which scenarios' hardware is compared with
  std::string date_utc;
  std::string git_sha;
  std::string source;   // how it was made: "gpu sweep" or "from raw <file>"
  std::string raw_file; // the raw measurements the fit used
  int64_t tile_m = 128;
  int64_t tile_n = 128;
  std::vector<KernelFit> kernels;
  std::vector<MergeFit> merges; // empty in profiles written before 2026-12-02
  std::vector<CommFit> comms;
  bool has_overlap = false;
  OverlapFit overlap;
  std::vector<std::string> not_calibrated; // sweeps that could not run here, with the reason
};

inline constexpr const char* kProfileFormat = "cpsim-profile";

Json profile_to_json(const Profile& p);
/** Strict: unknown keys, wrong types, non-positive times or bandwidths, empty ranges -> UserError naming the key. */
Profile profile_from_json(const Json& j, const std::string& where);
/** Loads and validates a profile file; UserError naming the file on any problem. */
Profile load_profile(const std::string& path);

/** The "direction" key of a profile or raw-sample entry ("fwd" or "bwd"; to_string(Direction) writes it). */
Direction read_direction(JsonObjectReader& r);

std::string link_name(bool same_node);
std::string comm_op_name(OpKind kind, CollectiveKind coll);

} // namespace cpsim::calib
