// Calibrated kernel and communication models (see calibrated_models.hpp).
#include "cpsim/calibrate/calibrated_models.hpp"

#include "cpsim/calibrate/fit.hpp"
#include "cpsim/calibrate/kernel_model.hpp"

#include <cmath>
#include <cstdlib>

namespace cpsim::calib {

namespace {
std::string family_name(Direction d, int head_dim) {
  return to_string(d) + " attention (head_dim " + std::to_string(head_dim) + ")";
}
} // namespace

CalibratedKernelModel::CalibratedKernelModel(const Profile& p, const GpuSpec& gpu, const Workload& w, int64_t tile_m,
                                             int64_t tile_n, RangeNotes& notes)
    : p_(p), w_(w), roofline_(gpu, w, tile_m, tile_n), notes_(notes) {}

double CalibratedKernelModel::attention_s(const Op& op) const {
  const KernelFit* best = nullptr;
  for (const auto& k : p_.kernels)
    if (k.dir == op.dir && (!best || std::abs(k.head_dim - w_.head_dim) < std::abs(best->head_dim - w_.head_dim)))
      best = &k;
  const std::string subject = family_name(op.dir, w_.head_dim);
  if (!best) {
    notes_.note(subject + ": not calibrated in the profile, roofline used");
    return roofline_.attention_s(op);
  }
  KernelFit f = *best;
  if (f.head_dim != w_.head_dim) {
    // per-tile work grows with the head dimension; per-CTA and launch costs do not
    const double scale = double(w_.head_dim) / double(f.head_dim);
    for (auto& g : f.grids) {
      g.tile_full_s *= scale;
      g.tile_partial_s *= scale;
      g.partial_visible_s *= scale;
    }
    notes_.note(subject + ": head_dim not calibrated, tile times scaled from head_dim " + std::to_string(f.head_dim));
  }
  if (!geometry_)
    geometry_ = std::make_unique<MaskGeometry>(w_);
  std::vector<GridKind> kinds;
  for (const auto& g : f.grids)
    kinds.push_back(g.kind);
  const KernelShape x = kernel_shape(op, w_, *geometry_, f.tile, kinds);
  notes_.check(subject, "tiles x heads", x.tiles, f.tiles);
  notes_.check(subject, "CTAs", double(x.ctas), f.ctas);
  notes_.check(subject, "query tokens", double(x.tokens), f.tokens);
  notes_.check(subject, "query heads per KV head", x.gqa, f.gqa);
  if (x.tiles > 0)
    notes_.check(subject, "partial-tile fraction", x.partial / x.tiles, f.partial_fraction);
  return kernel_time_s(f, x, p_.sm_count);
}

double CalibratedKernelModel::merge_s(const Op& op) const {
  for (const auto& m : p_.merges)
    if (m.dir == op.dir) {
      const double bytes = merge_traffic_bytes(op, w_);
      notes_.check("merge " + to_string(op.dir), "bytes", bytes, m.bytes);
      return merge_time_s(m, bytes);
    }
  notes_.note("merge " + to_string(op.dir) + " ops: not calibrated in the profile, roofline used");
  return roofline_.merge_s(op);
}

double CalibratedKernelModel::compute_s(const Op& op) const {
  notes_.note("compute ops (gather, sparsity predictor): not calibrated in the profile, roofline used");
  return roofline_.compute_s(op);
}

CalibratedCommModel::CalibratedCommModel(const Profile& p, const ClusterSpec& c, std::vector<int> placement,
                                         RangeNotes& notes)
    : p_(p), roofline_(c, std::move(placement)), notes_(notes) {}

const CommFit* CalibratedCommModel::find(const std::string& link, const std::string& op) const {
  for (const auto& f : p_.comms)
    if (f.link == link && f.op == op)
      return &f;
  notes_.note(op + " over " + link + ": not calibrated in the profile, roofline used");
  return nullptr;
}

double CalibratedCommModel::p2p_s(int src, int dst, int64_t bytes) const {
  const CommFit* f = find(link_name(roofline_.same_node(src, dst)), "p2p");
  if (!f)
    return roofline_.p2p_s(src, dst, bytes);
  notes_.check("p2p over " + f->link, "bytes", double(bytes), f->bytes);
  return comm_time_s(*f, 2, bytes);
}

double CalibratedCommModel::collective_s(CollectiveKind kind, const std::vector<int>& group, int64_t bytes) const {
  bool local = true;
  for (int r : group)
    local = local && roofline_.same_node(group.front(), r);
  const std::string op = to_string(kind);
  const CommFit* f = find(link_name(local), op);
  if (!f)
    return roofline_.collective_s(kind, group, bytes);
  const int n = int(group.size());
  const int64_t sent = CommCostModel::collective_bytes_sent(kind, n, bytes);
  notes_.check(op + " over " + f->link, "bytes sent", double(sent), f->bytes);
  notes_.check(op + " over " + f->link, "group size", double(n), f->group);
  return comm_time_s(*f, n, sent);
}

Json CostModels::to_json() const {
  if (!profile)
    return {{"profile", nullptr}, {"model", "roofline (hardware description)"}};
  return {{"profile", profile_path},       {"name", profile->name},       {"gpu_name", profile->gpu_name},
          {"date_utc", profile->date_utc}, {"git_sha", profile->git_sha}, {"notes", notes->to_json()}};
}

CostModels make_cost_models(const std::string& profile_path, const ClusterSpec& c, const Workload& w,
                            const Schedule& s) {
  CostModels m;
  m.notes = std::make_unique<RangeNotes>();
  if (profile_path.empty()) {
    m.kernels = std::make_unique<RooflineKernelModel>(c.gpu, w, s.tile_m, s.tile_n);
    m.comm = std::make_unique<CommCostModel>(c, s.placement);
    return m;
  }
  m.profile = std::make_unique<Profile>(load_profile(profile_path));
  m.profile_path = profile_path;
  const Profile& p = *m.profile;
  if (p.hardware_gpu != c.gpu.name)
    m.notes->note("profile measured on '" + p.gpu_name + "' (hardware '" + p.hardware + "', GPU '" + p.hardware_gpu +
                  "') but the scenario's GPU is '" + c.gpu.name + "'");
  if (p.sm_count != c.gpu.sm_count)
    m.notes->note("profile measured with " + std::to_string(p.sm_count) + " SMs, the hardware has " +
                  std::to_string(c.gpu.sm_count) + " (the profile's count is used)");
  if (!p.kernels.empty()) {
    const KernelBuild here = this_build_kernels();
    if (!p.kernel_build.known())
      m.notes->note("profile's attention kernels are of unknown sources (measured before profiles recorded them); "
                    "this tree's are " + describe(here));
    else if (!p.kernel_build.same_kernels(here))
      m.notes->note("profile measured " + describe(p.kernel_build) + "; this tree's kernel sources differ (" + describe(here) +
                    "): its kernel times hold for them only as far as the changes left those kernels' speed alone");
  }
  m.kernels = std::make_unique<CalibratedKernelModel>(p, c.gpu, w, s.tile_m, s.tile_n, *m.notes);
  m.comm = std::make_unique<CalibratedCommModel>(p, c, s.placement, *m.notes);
  return m;
}

} // namespace cpsim::calib
