// Least-squares fits of the calibrated models (see fit.hpp and the model comments in profile.hpp).
#include "cpsim/calibrate/fit.hpp"

#include "cpsim/calibrate/kernel_fit.hpp"
#include "cpsim/calibrate/stats.hpp"
#include "robust_fit.hpp"
#include "cpsim/model/errors.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace cpsim::calib {

double comm_time_s(const CommFit& f, int group, int64_t bytes_sent) {
  const double steps = f.op == "p2p" ? 1.0 : double(group - 1);
  double t = steps * f.latency_s + double(bytes_sent) / f.bandwidth_bytes_per_s;
  const auto& c = f.correction;
  if (c.empty())
    return t;
  const double b = double(bytes_sent);
  if (b <= c.front().first)
    return t * c.front().second;
  if (b >= c.back().first)
    return t * c.back().second;
  size_t i = 1;
  while (c[i].first < b)
    ++i;
  const double u = (std::log(b) - std::log(c[i - 1].first)) / (std::log(c[i].first) - std::log(c[i - 1].first));
  return t * (c[i - 1].second + u * (c[i].second - c[i - 1].second));
}

std::vector<CommFit> fit_comms(const std::vector<CommSample>& samples) {
  std::map<std::pair<std::string, std::string>, std::vector<const CommSample*>> groups;
  for (const auto& s : samples)
    groups[{s.link, s.op}].push_back(&s);
  std::vector<CommFit> out;
  for (const auto& [key, ss] : groups) {
    const std::string what = key.second + " over " + key.first;
    std::set<int64_t> sizes;
    for (const auto* s : ss)
      sizes.insert(s->bytes_sent);
    if (sizes.size() < 2)
      throw UserError("communication samples for " + what + ": one message size only, the fit needs two or more");
    const Eigen::Index n = Eigen::Index(ss.size());
    Eigen::MatrixXd a(n, 2);
    Eigen::VectorXd y(n);
    for (Eigen::Index i = 0; i < n; ++i) {
      const CommSample& s = *ss[size_t(i)];
      a.row(i) << (s.op == "p2p" ? 1.0 : double(s.group - 1)), double(s.bytes_sent);
      y(i) = s.measured_s;
    }
    Eigen::VectorXd p = nnls_relative(a, y);
    if (p(1) <= 0)
      throw UserError("communication samples for " + what +
                      ": times do not grow with size, no bandwidth can be fitted");
    CommFit f;
    f.link = key.first;
    f.op = key.second;
    f.latency_s = p(0);
    f.bandwidth_bytes_per_s = 1.0 / p(1);
    f.bytes = f.group = Range::none();
    std::vector<double> line_pred, line_meas;
    for (const auto* s : ss) {
      line_pred.push_back(comm_time_s(f, s->group, s->bytes_sent)); // no correction yet: the line alone
      line_meas.push_back(s->measured_s);
    }
    f.line_quality = quality_of(line_pred, line_meas);
    std::map<int64_t, std::vector<double>> ratio;
    for (const auto* s : ss) {
      ratio[s->bytes_sent].push_back(s->measured_s / comm_time_s(f, s->group, s->bytes_sent));
      f.bytes.extend(double(s->bytes_sent));
      f.group.extend(double(s->group));
    }
    for (const auto& [b, r] : ratio)
      f.correction.push_back({double(b), median(r)});
    std::vector<double> pred, meas;
    for (const auto* s : ss) {
      pred.push_back(comm_time_s(f, s->group, s->bytes_sent));
      meas.push_back(s->measured_s);
    }
    f.quality = quality_of(pred, meas);
    out.push_back(f);
  }
  return out;
}

OverlapFit fit_overlap(const std::vector<OverlapSample>& samples) {
  CPSIM_ASSERT(!samples.empty(), "overlap fit of no samples");
  std::vector<double> comp, comm;
  for (const auto& s : samples) {
    comp.push_back(s.compute_overlapped_s / s.compute_alone_s);
    comm.push_back(s.comm_overlapped_s / s.comm_alone_s);
  }
  return {median(comp), median(comm), int(samples.size())};
}

double merge_time_s(const MergeFit& f, double bytes) {
  return f.launch_s + bytes / f.bytes_per_s;
}

std::vector<MergeFit> fit_merges(const std::vector<MergeSample>& samples, std::vector<std::string>& not_calibrated) {
  std::vector<MergeFit> out;
  for (Direction dir : {Direction::FORWARD, Direction::BACKWARD}) {
    std::vector<const MergeSample*> ss;
    std::set<double> sizes;
    for (const auto& s : samples)
      if (s.dir == dir) {
        ss.push_back(&s);
        sizes.insert(s.bytes);
      }
    if (ss.empty())
      continue;
    const std::string what = "merge " + to_string(dir);
    if (sizes.size() < 3) {
      not_calibrated.push_back(what + ": " + std::to_string(sizes.size()) + " distinct sizes measured, the fit needs 3");
      continue;
    }
    Eigen::MatrixXd a(Eigen::Index(ss.size()), 2);
    Eigen::VectorXd y(Eigen::Index(ss.size()));
    for (size_t i = 0; i < ss.size(); ++i) {
      a.row(Eigen::Index(i)) << 1.0, ss[i]->bytes;
      y(Eigen::Index(i)) = ss[i]->measured_s;
    }
    const Eigen::VectorXd x = huber_nnls_relative(a, y);
    if (!(x(1) > 0)) {
      not_calibrated.push_back(what + ": the times do not grow with the bytes merged (no bandwidth to fit)");
      continue;
    }
    MergeFit f;
    f.dir = dir;
    f.launch_s = x(0);
    f.bytes_per_s = 1.0 / x(1);
    f.bytes = Range::none();
    std::vector<double> pred, meas;
    for (const auto* s : ss) {
      f.bytes.extend(s->bytes);
      pred.push_back(merge_time_s(f, s->bytes));
      meas.push_back(s->measured_s);
    }
    f.quality = quality_of(pred, meas);
    out.push_back(f);
  }
  return out;
}

Profile fit_profile(const RawMeasurements& raw, double spec_hbm_bytes_per_s, const KernelFitOptions& kernel_options) {
  Profile p;
  p.gpu_name = raw.gpu_name;
  p.sm_count = raw.sm_count;
  p.gpus = raw.gpus;
  p.hardware = raw.hardware;
  p.hardware_gpu = raw.hardware_gpu;
  p.date_utc = raw.date_utc;
  p.git_sha = raw.git_sha;
  p.tile_m = raw.tile_m;
  p.tile_n = raw.tile_n;
  p.kernel_build = raw.kernel_build;
  p.not_calibrated = raw.not_calibrated;
  p.kernels = fit_kernels(raw.kernels, raw.sm_count, spec_hbm_bytes_per_s, kernel_options);
  p.merges = fit_merges(raw.merges, p.not_calibrated);
  if (p.merges.empty() && raw.merges.empty())
    p.not_calibrated.push_back("merge ops: no merge samples in the raw measurements (runs before 2026-12-02; "
                               "`calibrate --from-run DIR` reads them from a run's plans and measured ops)");
  p.comms = fit_comms(raw.comms);
  if (!raw.overlaps.empty()) {
    p.has_overlap = true;
    p.overlap = fit_overlap(raw.overlaps);
  }
  if (p.kernels.empty() && p.comms.empty())
    throw UserError("the raw measurements hold no kernel and no communication samples: nothing to fit");
  return p;
}

} // namespace cpsim::calib
