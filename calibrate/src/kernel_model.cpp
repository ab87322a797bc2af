// Shapes, times and design rows of the calibrated kernel model (see kernel_model.hpp).
#include "cpsim/calibrate/kernel_model.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/sm_schedule.hpp"

#include <algorithm>

namespace cpsim::calib {

double gqa_ratio(const Workload& w) { return double(w.heads) / double(std::max(1, w.kv_heads)); }

KernelShape kernel_shape(const Op& op, const Workload& w, const MaskGeometry& m, KernelTile tile,
                         const std::vector<GridKind>& grids) {
  CPSIM_ASSERT(op.kind == OpKind::ATTENTION, "kernel shape of a non-attention op");
  KernelShape x;
  for (GridKind g : grids) {
    x.grids.push_back(cta_classes(op, w, m, tile, g));
    int64_t n = 0;
    for (const auto& c : x.grids.back())
      n += c.count;
    x.ctas = std::max(x.ctas, n);
  }
  if (!x.grids.empty())
    for (const auto& c : x.grids.front()) {
      x.tiles += c.tiles() * double(c.count);
      x.partial += c.partial * double(c.count);
    }
  int64_t q_rows = 0, k_rows = 0;
  for (const auto& s : op.segments) {
    q_rows += s.q.size();
    k_rows += s.k.size();
  }
  x.tokens = q_rows;
  x.gqa = gqa_ratio(w);
  const double h = op.heads(), kv_heads = std::max(1.0, h / x.gqa);
  x.bytes = (2.0 * double(q_rows) * h + 2.0 * double(k_rows) * kv_heads) * w.head_dim * w.elem_bytes();
  if (op.dir == Direction::BACKWARD)
    x.bytes *= 2.5; // dO, dQ, dK, dV besides the forward's tensors, as the roofline counts them
  return x;
}

namespace {
double cta_cost(const GridFit& g, const CtaClass& c) {
  return g.cta_s + c.heads * g.head_s + c.full * g.tile_full_s + c.partial * g.tile_partial_s +
         c.visible * g.partial_visible_s;
}

GridMakespan grid_time(const KernelFit& f, const GridFit& g, const std::vector<CtaClass>& cs, int sm_count) {
  std::vector<double> cost;
  std::vector<int64_t> count;
  for (const auto& c : cs) {
    cost.push_back(cta_cost(g, c));
    count.push_back(c.count);
  }
  return grid_makespan(cost, count, {sm_count, g.ctas_per_sm, f.alone_fraction});
}
} // namespace

double kernel_compute_s(const KernelFit& f, const KernelShape& x, int sm_count) {
  CPSIM_ASSERT(x.grids.size() == f.grids.size(), "kernel shape computed for other grids than the fit's");
  double t = 0;
  for (size_t i = 0; i < f.grids.size(); ++i)
    t += grid_time(f, f.grids[i], x.grids[i], sm_count).seconds;
  return t;
}

double kernel_time_s(const KernelFit& f, const KernelShape& x, int sm_count) {
  const double memory_s = f.hbm_bytes_per_s > 0 ? x.bytes / f.hbm_bytes_per_s : 0;
  return f.launch_s + std::max(kernel_compute_s(f, x, sm_count), memory_s);
}

std::vector<double> kernel_design_row(const KernelFit& f, const KernelShape& x, int sm_count) {
  CPSIM_ASSERT(x.grids.size() == f.grids.size(), "kernel shape computed for other grids than the fit's");
  std::vector<double> row(size_t(design_width(f.grids.size())), 0.0);
  row[0] = 1;
  for (size_t i = 0; i < f.grids.size(); ++i) {
    const auto& cs = x.grids[i];
    const GridMakespan m = grid_time(f, f.grids[i], cs, sm_count);
    double* r = &row[1 + kGridParams * i];
    for (size_t c = 0; c < cs.size(); ++c) {
      const double wgt = m.weights[c];
      r[0] += wgt;
      r[1] += wgt * cs[c].heads;
      r[2] += wgt * cs[c].full;
      r[3] += wgt * cs[c].partial;
      r[4] += wgt * cs[c].visible;
    }
  }
  return row;
}

} // namespace cpsim::calib
