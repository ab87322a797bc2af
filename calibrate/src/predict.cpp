// Prediction with the overlap slowdown (see predict.hpp).
#include "cpsim/calibrate/predict.hpp"

#include "cpsim/simulator/analytic_engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <utility>

namespace cpsim::calib {

namespace {
constexpr int kMaxPasses = 10;

/** Scales attention ops by per-op factors; ops are told apart by address (the schedule is not copied between passes).
 */
class SlowedKernels final : public KernelCostModel {
public:
  SlowedKernels(const KernelCostModel& base, const std::map<const Op*, double>& factor)
      : base_(base), factor_(factor) {}
  double attention_s(const Op& op) const override {
    auto it = factor_.find(&op);
    return base_.attention_s(op) * (it == factor_.end() ? 1.0 : it->second);
  }
  double merge_s(const Op& op) const override { return base_.merge_s(op); }
  double compute_s(const Op& op) const override { return base_.compute_s(op); }

private:
  const KernelCostModel& base_;
  const std::map<const Op*, double>& factor_;
};

/** Per attention op, the fraction of its time some communication of its rank is in flight. */
std::map<const Op*, double> overlap_fractions(const Schedule& s, const SimResult& r) {
  std::vector<std::vector<std::pair<double, double>>> comm(size_t(s.world));
  for (const auto& rec : r.records) {
    const Op& op = s.ranks[size_t(rec.rank)].ops[size_t(rec.op)];
    if (op.kind == OpKind::SEND || op.kind == OpKind::RECV || op.kind == OpKind::COLLECTIVE)
      comm[size_t(rec.rank)].push_back({rec.start_s, rec.end_s});
  }
  for (auto& v : comm) { // union of intervals, sorted and merged
    std::sort(v.begin(), v.end());
    std::vector<std::pair<double, double>> u;
    for (const auto& iv : v)
      if (!u.empty() && iv.first <= u.back().second)
        u.back().second = std::max(u.back().second, iv.second);
      else
        u.push_back(iv);
    v = std::move(u);
  }
  std::map<const Op*, double> f;
  for (const auto& rec : r.records) {
    const Op& op = s.ranks[size_t(rec.rank)].ops[size_t(rec.op)];
    const double d = rec.end_s - rec.start_s;
    if (op.kind != OpKind::ATTENTION || d <= 0)
      continue;
    double covered = 0;
    for (const auto& [a, b] : comm[size_t(rec.rank)])
      covered += std::max(0.0, std::min(b, rec.end_s) - std::max(a, rec.start_s));
    if (covered > 0)
      f[&op] = std::min(1.0, covered / d);
  }
  return f;
}
} // namespace

SimResult predict(const Schedule& s, const Workload& w, const CostModels& m) {
  SimResult r = run_analytic(s, w, *m.kernels, *m.comm);
  if (!m.profile || !m.profile->has_overlap || m.profile->overlap.compute_slowdown == 1.0)
    return r;
  const double extra = m.profile->overlap.compute_slowdown - 1.0;
  // Overlaps are measured on the slowed timeline of the previous pass; the fractions only move
  // by what the slowdown shifts, so this settles quickly (checked, and capped).
  std::map<const Op*, double> factor;
  int passes = 0;
  bool settled = false;
  double slowest = 1.0;
  while (!settled && passes < kMaxPasses) {
    ++passes;
    std::map<const Op*, double> next;
    for (const auto& [op, frac] : overlap_fractions(s, r))
      next[op] = 1.0 + extra * frac;
    factor = std::move(next);
    SlowedKernels k(*m.kernels, factor);
    SimResult again = run_analytic(s, w, k, *m.comm);
    settled = std::abs(again.step_time_s - r.step_time_s) <= 1e-6 * r.step_time_s;
    r = std::move(again);
  }
  for (const auto& [op, x] : factor)
    slowest = std::max(slowest, x);
  if (!factor.empty()) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "overlap: %zu attention ops run beside communication, slowed by up to %.1f %% (profile "
                  "compute_slowdown %.3f, %d passes%s)",
                  factor.size(), 100 * (slowest - 1), m.profile->overlap.compute_slowdown, passes,
                  settled ? "" : ", not settled");
    m.notes->note(buf);
  }
  return r;
}

} // namespace cpsim::calib
