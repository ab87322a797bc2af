// A calibrated profile: the fitted parameters of the kernel, communication and overlap models for
// one GPU type, the ranges the calibration covered, and where the numbers came from. Written by
// `cpsim calibrate` to hardware/profiles/<name>.json and read (strictly) by every command that
// predicts with --profile. Reading rejects anything it does not understand, naming key and reason.
#pragma once

#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/kernel_grid.hpp"
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
 * One launch of an attention op: how its CTAs are laid out (kernel_grid.hpp), how many are resident per SM, and
 * what a CTA costs on a full SM: cta_s + heads x head_s + full x tile_full_s + partial x tile_partial_s +
 * visible x partial_visible_s, with its full and partly masked tiles and their visible fraction summed over the
 * heads it walks (head_s only for grids whose CTAs walk several heads).
 */
struct GridFit {
  GridKind kind = GridKind::Q_PER_HEAD;
  int ctas_per_sm = 1;
  double cta_s = 0;             // per CTA: loading its own tile, the epilogue, the LSE / dK dV writes
  double head_s = 0;            // per query head a KV-head CTA walks
  double tile_full_s = 0;       // per fully visible tile
  double tile_partial_s = 0;    // per partly masked tile
  double partial_visible_s = 0; // per partly masked tile, times the fraction of it that is visible
};

/**
 * Attention kernel model for one (direction, head_dim) family (see kernel_model.hpp):
 *   t = launch_s + max(sum over grids of their makespan (sm_schedule.hpp), bytes / hbm_bytes_per_s)
 * The kernel's tile, its grids, their occupancy and the lone-CTA rate are what the fit found best on the
 * measurements, among a few candidates, not what the code of the kernels says: the profile describes the kernels
 * that ran, and the calibration of another implementation finds its own.
 */
struct KernelFit {
  Direction dir = Direction::FORWARD;
  int head_dim = 128;
  KernelTile tile;             // query rows x key rows the kernel computes at a time
  double alone_fraction = 1.0; // a CTA alone on an SM takes this fraction of its time on a full SM
  double launch_s = 0;         // per op: launches, small passes (the backward's row sums), synchronisation
  std::vector<GridFit> grids;  // launched one after another
  double hbm_bytes_per_s = 0;
  std::string hbm_source; // "fit" (memory-bound samples seen) or "spec" (none seen: the data sheet's figure)
  Range tiles;            // tiles x heads per op (first grid)
  Range ctas;             // CTAs per grid
  Range tokens;           // query rows per op
  Range partial_fraction; // partial / all tiles
  Range gqa;              // query heads per KV head
  FitQuality quality;
  /** How decisive the choice was: the selection loss of the best fit of each (tile, layout) candidate, lowest first
   *  (the chosen one's before its occupancies and lone-CTA fraction were refined). */
  struct Candidate {
    KernelTile tile;
    std::vector<GridKind> grids;
    double loss = 0;
  };
  std::vector<Candidate> candidates;
};

/**
 * The kernel implementation measurements describe: a hash of the kernel library's sources (kernels/src,
 * kernels/include and its CMakeLists.txt, as cmake/kernel_source_hash.cmake computes it), the last commit that
 * touched them, and which of the library's tensor-core implementations its fast path ran (the library says, at
 * calibration time: "mma", "wgmma"). A profile for other kernels still predicts, but says so.
 */
struct KernelBuild {
  std::string source_sha256;  // "" when unknown (measurements recorded before 2026-12-07 without a git SHA to derive it)
  std::string git_sha;        // last commit touching kernels/ in the tree that was built, "+dirty" if edited since
  std::string implementation; // what the fast path ran; "" when unknown (a CPU build cannot ask the library)
  bool known() const { return !source_sha256.empty(); }
  /** Same sources, and the same implementation where both are known. */
  bool same_kernels(const KernelBuild& o) const {
    return source_sha256 == o.source_sha256 &&
           (implementation.empty() || o.implementation.empty() || implementation == o.implementation);
  }
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
  int64_t tile_m = 128; // the schedules' accounting tile of the sweep plans (the kernels' own tile is per KernelFit)
  int64_t tile_n = 128;
  KernelBuild kernel_build; // the attention kernels the kernel fits describe
  std::vector<KernelFit> kernels;
  std::vector<MergeFit> merges; // empty in profiles written before 2026-12-02
  std::vector<CommFit> comms;
  bool has_overlap = false;
  OverlapFit overlap;
  std::vector<std::string> not_calibrated; // sweeps that could not run here, with the reason
};

inline constexpr const char* kProfileFormat = "cpsim-profile";

Json profile_to_json(const Profile& p);
/** Version 2 (kernel model of 2026-12-07). Written profiles carry it; version 1 is refused, naming the refit. */
inline constexpr int kProfileVersion = 2;

/** Strict: unknown keys, wrong types, non-positive times or bandwidths, empty ranges -> UserError naming the key. */
Profile profile_from_json(const Json& j, const std::string& where);
/** Loads and validates a profile file; UserError naming the file on any problem. */
Profile load_profile(const std::string& path);

/** The "direction" key of a profile or raw-sample entry ("fwd" or "bwd"; to_string(Direction) writes it). */
Direction read_direction(JsonObjectReader& r);

Json kernel_build_json(const KernelBuild& b);
KernelBuild read_kernel_build(JsonObjectReader& parent, const std::string& key);
/** The kernel sources of the tree this binary was built from (generated at build time). */
KernelBuild this_build_kernels();
/** "kernels <hash12> (git <sha>, <implementation>)" or "kernels of unknown sources", for notes and logs. */
std::string describe(const KernelBuild& b);

std::string link_name(bool same_node);
std::string comm_op_name(OpKind kind, CollectiveKind coll);

} // namespace cpsim::calib
