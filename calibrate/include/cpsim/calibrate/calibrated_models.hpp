// The cost models of a calibrated profile, behind the interfaces the engines already take
// (KernelCostModel, CommTimeModel). Where the profile lacks a family (a direction, a link, a
// collective, merge ops) the roofline v1 answers instead and a note says so; every quantity outside
// the calibrated ranges is noted too (RangeNotes), so no prediction hides that it extrapolates.
#pragma once

#include "cpsim/calibrate/profile.hpp"
#include "cpsim/calibrate/range_notes.hpp"
#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/kernel_cost.hpp"

#include <memory>

namespace cpsim::calib {

class CalibratedKernelModel final : public KernelCostModel {
public:
  CalibratedKernelModel(const Profile& p, const GpuSpec& gpu, const Workload& w, int64_t tile_m, int64_t tile_n,
                        RangeNotes& notes);
  double attention_s(const Op& op) const override;
  double merge_s(const Op& op) const override;
  double compute_s(const Op& op) const override;

private:
  const Profile& p_;
  Workload w_;
  RooflineKernelModel roofline_; // for what the profile lacks, with the schedule's tile
  RangeNotes& notes_;
  mutable std::unique_ptr<MaskGeometry> geometry_; // built on the first attention op (block layouts cost memory)
};

class CalibratedCommModel final : public CommTimeModel {
public:
  CalibratedCommModel(const Profile& p, const ClusterSpec& c, std::vector<int> placement, RangeNotes& notes);
  double p2p_s(int src, int dst, int64_t bytes) const override;
  double collective_s(CollectiveKind kind, const std::vector<int>& group, int64_t bytes) const override;

private:
  const CommFit* find(const std::string& link, const std::string& op) const;
  const Profile& p_;
  CommCostModel roofline_;
  RangeNotes& notes_;
};

/** The models an engine needs for one schedule: calibrated when a profile is given, else roofline. */
struct CostModels {
  std::unique_ptr<Profile> profile; // null: roofline
  std::string profile_path;
  std::unique_ptr<RangeNotes> notes;
  std::unique_ptr<KernelCostModel> kernels;
  std::unique_ptr<CommTimeModel> comm;
  /** {"profile": path or null, "gpu_name", "date_utc", "git_sha", "notes": [...]} for result files. */
  Json to_json() const;
};

/** Notes about the profile against the scenario's hardware (GPU name, SM count, tile shape) and against the kernels
 *  of this build (another kernel implementation than the profile's) are added here. */
CostModels make_cost_models(const std::string& profile_path, const ClusterSpec& c, const Workload& w,
                            const Schedule& s);

} // namespace cpsim::calib
