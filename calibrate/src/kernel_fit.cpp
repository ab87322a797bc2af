// The kernel fit (see kernel_fit.hpp). For each candidate (tile, grid layout, CTAs per SM per grid, lone-CTA
// fraction) the linear parameters are fitted by alternating: the SM schedule at the current parameters says which
// CTAs set each op's time (design rows), a Huber-weighted relative NNLS refits the parameters on them, and ops
// measured well above the compute model are set aside as memory-bound (their bytes fit the HBM bandwidth, refused
// below a quarter of the data sheet). Candidates are compared by a Huber loss of their relative errors, so a few
// shapes no candidate explains do not decide the choice. A coarse pass picks the tile and layout, a fine one the
// occupancies and the lone-CTA fraction.
#include "cpsim/calibrate/kernel_fit.hpp"

#include "cpsim/calibrate/kernel_model.hpp"
#include "cpsim/calibrate/stats.hpp"
#include "cpsim/model/errors.hpp"
#include "robust_fit.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <thread>

namespace cpsim::calib {

std::vector<KernelTile> parse_kernel_tiles(const std::string& list, const std::string& option) {
  std::vector<KernelTile> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t end = std::min(list.find(',', start), list.size());
    const std::string t = list.substr(start, end - start);
    long long q = 0, k = 0;
    int used = 0;
    if (std::sscanf(t.c_str(), "%lldx%lld%n", &q, &k, &used) != 2 || size_t(used) != t.size() || q < 8 || k < 8 ||
        q > 1024 || k > 1024)
      throw UserError(option + " = \"" + list + "\": '" + t + "' is not a tile QxK (query rows x key rows, 8..1024), "
                      "e.g. 64x64");
    out.push_back({q, k});
    start = end + 1;
  }
  return out;
}

std::vector<std::vector<GridKind>> grid_candidates(Direction dir) {
  using G = GridKind;
  if (dir == Direction::FORWARD)
    return {{G::Q_PER_HEAD}, {G::Q_PER_KV_HEAD}};
  // a dK/dV pass per key tile (per head, or per KV head walking its group) with a separate dQ pass, or one pass
  // that also accumulates dQ (atomically) in the same CTAs
  return {{G::K_PER_KV_HEAD, G::Q_PER_HEAD}, {G::K_PER_HEAD, G::Q_PER_HEAD}, {G::K_PER_KV_HEAD}, {G::K_PER_HEAD}};
}

namespace {

constexpr double kMinHbmFractionOfSpec = 0.25;
constexpr double kMemoryBoundExcess = 1.15; // measured this far above the compute model: a memory-bound candidate
constexpr double kSelectionHuber = 0.02;    // relative error beyond which a sample counts linearly in the choice
// A partly masked tile computes what a full one does plus its masking (or, in a kernel that skips masked blocks, at
// least its visible part): a fit that prices it above twice a full tile, or a half-visible one below half a full
// tile, is absorbing something else (a few one-wave grids, say) and would price every masked tile of a prediction
// so. Such a launch has its partial tiles tied to the full tile's time instead.
constexpr double kMaxPartialOverFull = 2.0;
constexpr double kMinHalfPartialOverFull = 0.5;

bool walks_heads(GridKind g) { return g == GridKind::Q_PER_KV_HEAD || g == GridKind::K_PER_KV_HEAD; }

/** One measured op, its shapes at every candidate tile for every grid kind its direction may use. */
struct Sample {
  const KernelSample* s = nullptr;
  std::vector<std::map<GridKind, std::vector<CtaClass>>> classes; // [tile]
  KernelShape base;                                               // bytes, tokens, gqa (no grids)
};

struct Family {
  Direction dir = Direction::FORWARD;
  int head_dim = 0;
  std::vector<Sample> samples;
};

struct Config {
  size_t tile = 0;
  size_t layout = 0;
  std::vector<int> ctas_per_sm; // per grid
  double alone = 1.0;
};

struct Result {
  KernelFit fit;
  double cost = 0;
  bool ok = false;
};

std::vector<double> params_of(const KernelFit& f) {
  std::vector<double> p{f.launch_s};
  for (const auto& g : f.grids)
    p.insert(p.end(), {g.cta_s, g.head_s, g.tile_full_s, g.tile_partial_s, g.partial_visible_s});
  return p;
}

void set_params(KernelFit& f, const Eigen::VectorXd& p) {
  f.launch_s = p(0);
  for (size_t i = 0; i < f.grids.size(); ++i) {
    GridFit& g = f.grids[i];
    const Eigen::Index b = Eigen::Index(1 + kGridParams * i);
    g.cta_s = p(b);
    g.head_s = p(b + 1);
    g.tile_full_s = p(b + 2);
    g.tile_partial_s = p(b + 3);
    g.partial_visible_s = p(b + 4);
  }
}

double huber(double e) {
  const double a = std::abs(e);
  return a <= kSelectionHuber ? 0.5 * a * a : kSelectionHuber * (a - 0.5 * kSelectionHuber);
}

/** The alternating fit of one candidate; the iterate with the lowest selection loss is kept. */
Result fit_config(const Family& fam, const std::vector<KernelTile>& tiles, const std::vector<GridKind>& layout,
                  const Config& c, int sm_count, double spec_hbm, int max_iter) {
  const size_t n = fam.samples.size();
  std::vector<KernelShape> shapes(n);
  bool any_partial = false;
  for (size_t i = 0; i < n; ++i) {
    shapes[i] = fam.samples[i].base;
    for (GridKind g : layout) {
      shapes[i].grids.push_back(fam.samples[i].classes[c.tile].at(g));
      for (const auto& k : shapes[i].grids.back())
        any_partial = any_partial || k.partial > 0;
    }
  }
  KernelFit f;
  f.dir = fam.dir;
  f.head_dim = fam.head_dim;
  f.tile = tiles[c.tile];
  f.alone_fraction = c.alone;
  for (size_t g = 0; g < layout.size(); ++g) {
    GridFit gf;
    gf.kind = layout[g];
    gf.ctas_per_sm = c.ctas_per_sm[g];
    gf.tile_full_s = gf.tile_partial_s = 1e-6; // a start: only the order of CTAs by cost depends on it
    f.grids.push_back(gf);
  }
  f.hbm_bytes_per_s = spec_hbm;
  f.hbm_source = "spec";
  Eigen::VectorXd y = Eigen::VectorXd::Zero(Eigen::Index(n));
  for (size_t i = 0; i < n; ++i)
    y(Eigen::Index(i)) = fam.samples[i].s->measured_s;
  const int width = design_width(layout.size());
  std::vector<bool> memory_bound(n, false);
  std::vector<bool> tied(layout.size(), !any_partial); // partial tiles priced as full ones
  Result best;
  std::vector<double> last;
  std::vector<std::vector<double>> design(n);
  std::vector<double> compute(n);
  // one SM schedule per op and iteration: it gives the compute time at the current parameters (for the loss and the
  // memory-bound split) and the design row the next fit solves
  auto simulate = [&] {
    for (size_t i = 0; i < n; ++i) {
      design[i] = kernel_design_row(f, shapes[i], sm_count);
      const Eigen::Map<const Eigen::VectorXd> row(design[i].data(), width);
      compute[i] = row.dot(Eigen::Map<const Eigen::VectorXd>(params_of(f).data(), width));
    }
  };
  simulate();
  for (int iter = 0; iter < max_iter; ++iter) {
    std::vector<Eigen::Index> rows;
    for (size_t i = 0; i < n; ++i)
      if (!memory_bound[i])
        rows.push_back(Eigen::Index(i));
    if (rows.size() < 2)
      break;
    Eigen::MatrixXd a(Eigen::Index(rows.size()), width);
    Eigen::VectorXd b(Eigen::Index(rows.size()));
    for (size_t k = 0; k < rows.size(); ++k) {
      const std::vector<double>& row = design[size_t(rows[k])];
      for (int j = 0; j < width; ++j)
        a(Eigen::Index(k), j) = row[size_t(j)];
      b(Eigen::Index(k)) = y(rows[k]);
    }
    // a CTA that walks one head has no per-head cost apart from its per-CTA one; without partly masked tiles
    // their times cannot be told apart from a full tile's (the full tile's stands in, as before)
    for (size_t g = 0; g < layout.size(); ++g) {
      const Eigen::Index base = Eigen::Index(1 + kGridParams * g);
      if (!walks_heads(layout[g]))
        a.col(base + 1).setZero();
      if (tied[g]) {
        a.col(base + 2) += a.col(base + 3);
        a.col(base + 3).setZero();
        a.col(base + 4).setZero();
      }
    }
    const Eigen::VectorXd p = huber_nnls_relative(a, b);
    set_params(f, p);
    // a launch that costs nothing is not a launch: that fit is the layout without it, which is a candidate of its own
    bool admissible = true;
    auto cost_scale = [](const GridFit& g) {
      return g.cta_s + g.head_s + g.tile_full_s + g.tile_partial_s + g.partial_visible_s;
    };
    double all = 0;
    for (const auto& gf : f.grids)
      all += cost_scale(gf);
    for (size_t g = 0; layout.size() > 1 && g < layout.size(); ++g)
      if (cost_scale(f.grids[g]) <= 1e-6 * all)
        admissible = false;
    for (size_t g = 0; g < layout.size(); ++g) {
      GridFit& gf = f.grids[g];
      if (tied[g]) {
        gf.tile_partial_s = gf.tile_full_s;
        gf.partial_visible_s = 0;
      } else if (gf.tile_partial_s + gf.partial_visible_s > kMaxPartialOverFull * gf.tile_full_s ||
                 gf.tile_partial_s + 0.5 * gf.partial_visible_s < kMinHalfPartialOverFull * gf.tile_full_s) {
        tied[g] = true; // refit with the bound; this iterate is not kept
        admissible = false;
      }
    }
    simulate(); // compute[i] now includes launch_s
    // memory-bound candidates: measured well above the compute model
    f.hbm_bytes_per_s = spec_hbm;
    f.hbm_source = "spec";
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
      const double yi = y(Eigen::Index(i));
      if ((memory_bound[i] || yi > kMemoryBoundExcess * compute[i]) && yi > f.launch_s) {
        const double bytes = shapes[i].bytes, w = 1.0 / (yi * yi);
        num += w * bytes * (yi - f.launch_s);
        den += w * bytes * bytes;
      }
    }
    std::vector<bool> next(n, false);
    // a "bandwidth" far below the data sheet's is the compute model missing on some samples, not HBM: refused
    if (num > 0 && den / num >= kMinHbmFractionOfSpec * spec_hbm) {
      f.hbm_bytes_per_s = den / num;
      f.hbm_source = "fit";
      for (size_t i = 0; i < n; ++i)
        next[i] = shapes[i].bytes / f.hbm_bytes_per_s > compute[i] - f.launch_s;
    }
    if (std::none_of(next.begin(), next.end(), [](bool v) { return v; })) {
      f.hbm_bytes_per_s = spec_hbm;
      f.hbm_source = "spec";
    }
    double cost = 0;
    for (size_t i = 0; i < n; ++i) {
      const double t = std::max(compute[i], f.launch_s + shapes[i].bytes / f.hbm_bytes_per_s);
      cost += huber(rel_err(t, y(Eigen::Index(i))));
    }
    if (admissible && (!best.ok || cost < best.cost))
      best = {f, cost, true};
    const std::vector<double> now = params_of(f);
    bool settled = admissible && next == memory_bound && !last.empty();
    for (size_t j = 0; settled && j < now.size(); ++j)
      settled = std::abs(now[j] - last[j]) <= 1e-6 * std::max(1e-12, std::abs(now[j]) + std::abs(last[j]));
    last = now;
    memory_bound = next;
    if (settled)
      break;
  }
  return best;
}

/** Evaluates every configuration (in parallel); results in the order given. */
std::vector<Result> fit_all(const Family& fam, const std::vector<KernelTile>& tiles,
                            const std::vector<std::vector<GridKind>>& layouts, const std::vector<Config>& cs,
                            int sm_count, double spec_hbm, unsigned threads, int max_iter) {
  std::vector<Result> out(cs.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < cs.size(); i = next++)
      out[i] = fit_config(fam, tiles, layouts[cs[i].layout], cs[i], sm_count, spec_hbm, max_iter);
  };
  unsigned n = threads ? threads : std::max(1u, std::thread::hardware_concurrency());
  n = std::min<unsigned>(n, unsigned(cs.size()));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < n; ++t)
    pool.emplace_back(work);
  work();
  for (auto& t : pool)
    t.join();
  return out;
}

size_t best_of(const std::vector<Result>& rs) {
  size_t b = rs.size();
  for (size_t i = 0; i < rs.size(); ++i)
    if (rs[i].ok && (b == rs.size() || rs[i].cost < rs[b].cost * (1 - 1e-9)))
      b = i;
  return b;
}

/** Every combination of CTAs per SM (1..max) over `grids` launches. */
std::vector<std::vector<int>> occupancies(size_t grids, int max) {
  std::vector<std::vector<int>> out{{}};
  for (size_t g = 0; g < grids; ++g) {
    std::vector<std::vector<int>> next;
    for (const auto& o : out)
      for (int k = 1; k <= max; ++k) {
        next.push_back(o);
        next.back().push_back(k);
      }
    out = next;
  }
  return out;
}

KernelFit fit_family(Family& fam, int sm_count, double spec_hbm, const KernelFitOptions& o) {
  const std::string what = to_string(fam.dir) + " attention, head_dim " + std::to_string(fam.head_dim);
  const auto layouts = grid_candidates(fam.dir);
  std::set<GridKind> kinds;
  for (const auto& l : layouts)
    kinds.insert(l.begin(), l.end());
  std::map<std::string, std::unique_ptr<MaskGeometry>> geometries;
  for (Sample& s : fam.samples) {
    const std::string key = workload_to_json(s.s->workload).dump();
    auto& g = geometries[key];
    if (!g)
      g = std::make_unique<MaskGeometry>(s.s->workload);
    s.base = kernel_shape(s.s->op, s.s->workload, *g, o.tiles.front(), {});
    for (const KernelTile& t : o.tiles) {
      s.classes.emplace_back();
      for (GridKind k : kinds)
        s.classes.back()[k] = cta_classes(s.s->op, s.s->workload, *g, t, k);
    }
  }
  std::set<std::tuple<double, double, int64_t, double>> distinct;
  for (const Sample& s : fam.samples) {
    const KernelShape x = kernel_shape(s.s->op, s.s->workload, *geometries[workload_to_json(s.s->workload).dump()],
                                       o.tiles.front(), {layouts.front().front()});
    distinct.insert({x.tiles, x.partial, x.ctas, x.gqa});
  }
  if (distinct.size() < 6)
    throw UserError("kernel samples for " + what + ": " + std::to_string(distinct.size()) +
                    " distinct shapes, the fit needs at least 6");
  // coarse (few iterations): tile and layout, one occupancy for all launches, three lone-CTA fractions
  std::vector<Config> coarse;
  for (size_t t = 0; t < o.tiles.size(); ++t)
    for (size_t l = 0; l < layouts.size(); ++l)
      for (int k = 1; k <= o.max_ctas_per_sm; ++k)
        for (double a : k == 1 ? std::vector<double>{1.0} : std::vector<double>{1.0 / k, 0.5 + 0.5 / k, 1.0})
          coarse.push_back({t, l, std::vector<int>(layouts[l].size(), k), a});
  const auto rc = fit_all(fam, o.tiles, layouts, coarse, sm_count, spec_hbm, o.threads, 4);
  const size_t bc = best_of(rc);
  if (bc == rc.size())
    throw UserError("kernel samples for " + what + ": no candidate model could be fitted");
  // fine (to convergence): for the three best (tile, layout) pairs every occupancy per launch (launches may differ in
  // occupancy, which the coarse pass does not try) with five lone-CTA fractions, then the fraction in steps of 0.05
  std::map<std::pair<size_t, size_t>, size_t> best_per_pair;
  for (size_t i = 0; i < coarse.size(); ++i)
    if (rc[i].ok) {
      auto [it, fresh] = best_per_pair.insert({{coarse[i].tile, coarse[i].layout}, i});
      if (!fresh && rc[i].cost < rc[it->second].cost)
        it->second = i;
    }
  std::vector<size_t> pairs;
  for (const auto& [key, i] : best_per_pair)
    pairs.push_back(i);
  std::stable_sort(pairs.begin(), pairs.end(), [&](size_t a, size_t b) { return rc[a].cost < rc[b].cost; });
  pairs.resize(std::min<size_t>(pairs.size(), 3));
  std::vector<Config> occ;
  for (size_t i : pairs)
    for (const auto& ks : occupancies(layouts[coarse[i].layout].size(), o.max_ctas_per_sm))
      for (double a : {0.3, 0.5, 0.7, 0.85, 1.0})
        occ.push_back({coarse[i].tile, coarse[i].layout, ks, a});
  std::vector<Result> rf = fit_all(fam, o.tiles, layouts, occ, sm_count, spec_hbm, o.threads, 12);
  // per pair, its best occupancies with the fraction refined; every fit so far (the coarse ones too) competes
  std::vector<Config> alone;
  for (size_t i : pairs) {
    size_t b = occ.size();
    for (size_t k = 0; k < occ.size(); ++k)
      if (rf[k].ok && occ[k].tile == coarse[i].tile && occ[k].layout == coarse[i].layout &&
          (b == occ.size() || rf[k].cost < rf[b].cost))
        b = k;
    if (b < occ.size())
      for (int m = 4; m <= 20; ++m)
        alone.push_back({occ[b].tile, occ[b].layout, occ[b].ctas_per_sm, 0.05 * m});
  }
  for (Result& r : fit_all(fam, o.tiles, layouts, alone, sm_count, spec_hbm, o.threads, 12))
    rf.push_back(r);
  rf.insert(rf.end(), rc.begin(), rc.end());
  KernelFit f = rf[best_of(rf)].fit;
  std::map<std::pair<size_t, size_t>, double> per_candidate;
  for (size_t i = 0; i < coarse.size(); ++i)
    if (rc[i].ok) {
      auto [it, fresh] = per_candidate.insert({{coarse[i].tile, coarse[i].layout}, rc[i].cost});
      if (!fresh)
        it->second = std::min(it->second, rc[i].cost);
    }
  for (const auto& [key, loss] : per_candidate)
    f.candidates.push_back({o.tiles[key.first], layouts[key.second], loss});
  std::stable_sort(f.candidates.begin(), f.candidates.end(),
                   [](const KernelFit::Candidate& a, const KernelFit::Candidate& b) { return a.loss < b.loss; });
  bool timed = false;
  for (const auto& g : f.grids)
    timed = timed || g.tile_full_s > 0;
  if (!timed)
    throw UserError("kernel samples for " + what + ": the fit gives no time per tile (times do not grow with work)");
  // ranges covered and in-sample quality, at the chosen tile and layout
  std::vector<GridKind> kinds_of;
  for (const auto& g : f.grids)
    kinds_of.push_back(g.kind);
  f.tiles = f.ctas = f.tokens = f.partial_fraction = f.gqa = Range::none();
  std::vector<double> pred, meas;
  for (const Sample& s : fam.samples) {
    const KernelShape x = kernel_shape(s.s->op, s.s->workload, *geometries[workload_to_json(s.s->workload).dump()],
                                       f.tile, kinds_of);
    f.tiles.extend(x.tiles);
    f.ctas.extend(double(x.ctas));
    f.tokens.extend(double(x.tokens));
    f.partial_fraction.extend(x.tiles > 0 ? x.partial / x.tiles : 0);
    f.gqa.extend(x.gqa);
    pred.push_back(kernel_time_s(f, x, sm_count));
    meas.push_back(s.s->measured_s);
  }
  f.quality = quality_of(pred, meas);
  return f;
}

} // namespace

std::vector<KernelFit> fit_kernels(const std::vector<KernelSample>& samples, int sm_count, double spec_hbm,
                                   const KernelFitOptions& o) {
  CPSIM_ASSERT(sm_count > 0 && spec_hbm > 0, "kernel fit needs the SM count and a data-sheet HBM bandwidth");
  CPSIM_ASSERT(!o.tiles.empty() && o.max_ctas_per_sm >= 1, "kernel fit needs candidate tiles and occupancies");
  std::map<std::pair<int, int>, Family> families;
  for (const auto& s : samples) {
    Family& f = families[{int(s.op.dir), s.workload.head_dim}];
    f.dir = s.op.dir;
    f.head_dim = s.workload.head_dim;
    f.samples.push_back({&s, {}, {}});
  }
  std::vector<KernelFit> out;
  for (auto& [key, fam] : families)
    out.push_back(fit_family(fam, sm_count, spec_hbm, o));
  return out;
}

KernelFit fit_kernel_structure(const std::vector<KernelSample>& samples, int sm_count, double spec_hbm,
                               KernelTile tile, const std::vector<GridKind>& grids, const std::vector<int>& ctas_per_sm,
                               double alone_fraction) {
  CPSIM_ASSERT(!samples.empty() && grids.size() == ctas_per_sm.size(), "one occupancy per launch, some samples");
  Family fam;
  fam.dir = samples.front().op.dir;
  fam.head_dim = samples.front().workload.head_dim;
  std::map<std::string, std::unique_ptr<MaskGeometry>> geometries;
  for (const auto& s : samples) {
    CPSIM_ASSERT(s.op.dir == fam.dir && s.workload.head_dim == fam.head_dim, "samples of one family");
    auto& g = geometries[workload_to_json(s.workload).dump()];
    if (!g)
      g = std::make_unique<MaskGeometry>(s.workload);
    Sample x{&s, {{}}, kernel_shape(s.op, s.workload, *g, tile, {})};
    for (GridKind k : grids)
      x.classes[0][k] = cta_classes(s.op, s.workload, *g, tile, k);
    fam.samples.push_back(std::move(x));
  }
  const Config c{0, 0, ctas_per_sm, alone_fraction};
  Result r = fit_config(fam, {tile}, grids, c, sm_count, spec_hbm, 12);
  CPSIM_ASSERT(r.ok, "a fit of the given structure");
  return r.fit;
}

std::vector<KernelResidual> kernel_residuals(const std::vector<KernelFit>& fits,
                                             const std::vector<KernelSample>& samples, int sm_count) {
  std::vector<KernelResidual> out;
  std::map<std::string, std::unique_ptr<MaskGeometry>> geometries;
  for (const auto& s : samples)
    for (const auto& f : fits) {
      if (f.dir != s.op.dir || f.head_dim != s.workload.head_dim)
        continue;
      auto& g = geometries[workload_to_json(s.workload).dump()];
      if (!g)
        g = std::make_unique<MaskGeometry>(s.workload);
      std::vector<GridKind> kinds;
      for (const auto& grid : f.grids)
        kinds.push_back(grid.kind);
      out.push_back({&s, kernel_time_s(f, kernel_shape(s.op, s.workload, *g, f.tile, kinds), sm_count)});
    }
  return out;
}

} // namespace cpsim::calib
