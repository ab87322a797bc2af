// The fp64 reference of the CPU emulator: attention, its LSE and gradients over the whole workload, cell by cell
// under the workload's mask, from the same position-addressed inputs the emulated ranks start with.
#include "plan_emulator_internal.hpp"

namespace cpsim::backend {

double emulated_input(int tensor, int seq, int64_t pos, int head, int64_t e, int dims) {
  if (e >= dims)
    return 0.0;
  uint64_t x = (uint64_t(tensor) << 58) ^ (uint64_t(seq) << 50) ^ (uint64_t(pos) << 22) ^ (uint64_t(head) << 10) ^ uint64_t(e);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb3fe1a85ec53ULL;
  x ^= x >> 33;
  return double(x >> 11) / double(1ULL << 53) * 2.0 - 1.0;
}

namespace emulator {

Reference reference(const Scenario& sc, bool backward, int dims) {
  const Workload& w = sc.workload;
  const MaskGeometry m(w);
  Reference r;
  r.heads = w.heads;
  r.kv_heads = w.kv_heads;
  r.dim = w.head_dim;
  const int per = w.heads / w.kv_heads, D = w.head_dim, E = std::min(dims, D);
  int64_t rows = 0;
  for (int64_t n : w.seq_lens) {
    r.seq_row.push_back(rows);
    rows += n;
  }
  r.o.assign(size_t(rows * w.heads * D), 0.0);
  r.lse.assign(size_t(rows * w.heads), kNegInf);
  if (backward) {
    r.dq.assign(r.o.size(), 0.0);
    r.dk.assign(size_t(rows * w.kv_heads * D), 0.0);
    r.dv.assign(r.dk.size(), 0.0);
  }
  const double scale = 1.0 / std::sqrt(double(D));
  // the inputs' first E elements, [row][head][E]
  std::vector<double> in_q(size_t(rows * w.heads * E)), in_k(size_t(rows * w.kv_heads * E)), in_v(in_k.size()), in_do(in_q.size());
  for (size_t sq = 0; sq < w.seq_lens.size(); ++sq)
    for (int64_t i = 0; i < w.seq_lens[sq]; ++i)
      for (int e = 0; e < E; ++e) {
        const int64_t row = r.seq_row[sq] + i;
        for (int h = 0; h < w.heads; ++h) {
          in_q[size_t((row * w.heads + h) * E + e)] = emulated_input(1, int(sq), i, h, e, E);
          in_do[size_t((row * w.heads + h) * E + e)] = emulated_input(4, int(sq), i, h, e, E);
        }
        for (int g = 0; g < w.kv_heads; ++g) {
          in_k[size_t((row * w.kv_heads + g) * E + e)] = emulated_input(2, int(sq), i, g, e, E);
          in_v[size_t((row * w.kv_heads + g) * E + e)] = emulated_input(3, int(sq), i, g, e, E);
        }
      }
  auto Q = [&](int s, int64_t i, int h) { return &in_q[size_t(((r.seq_row[size_t(s)] + i) * w.heads + h) * E)]; };
  auto dO = [&](int s, int64_t i, int h) { return &in_do[size_t(((r.seq_row[size_t(s)] + i) * w.heads + h) * E)]; };
  auto K = [&](int s, int64_t j, int g) { return &in_k[size_t(((r.seq_row[size_t(s)] + j) * w.kv_heads + g) * E)]; };
  auto V = [&](int s, int64_t j, int g) { return &in_v[size_t(((r.seq_row[size_t(s)] + j) * w.kv_heads + g) * E)]; };
  for (size_t sq = 0; sq < w.seq_lens.size(); ++sq) {
    const int64_t n = w.seq_lens[sq];
    const int s = int(sq);
    for (int h = 0; h < w.heads; ++h)
      for (int64_t i = 0; i < n; ++i) {
        std::vector<std::pair<int64_t, double>> cells;
        for (int64_t j = 0; j < n; ++j)
          if (m.visible(s, h, i, j)) {
            const double *q = Q(s, i, h), *k = K(s, j, h / per);
            double v = 0;
            for (int e = 0; e < E; ++e)
              v += q[e] * k[e];
            cells.push_back({j, v * scale});
          }
        if (cells.empty())
          continue;
        double mx = kNegInf, sum = 0;
        for (auto& c : cells)
          mx = std::max(mx, c.second);
        for (auto& c : cells)
          sum += std::exp(c.second - mx);
        const double L = mx + std::log(sum);
        r.at(r.lse, s, i, h, w.heads, 0, 1) = L;
        double* o = &r.at(r.o, s, i, h, w.heads, 0, D);
        for (auto& c : cells) {
          const double p = std::exp(c.second - L), *v = V(s, c.first, h / per);
          for (int e = 0; e < E; ++e)
            o[e] += p * v[e];
        }
        if (!backward)
          continue;
        const double* d_o = dO(s, i, h);
        double delta = 0;
        for (int e = 0; e < E; ++e)
          delta += d_o[e] * o[e];
        double* dq = &r.at(r.dq, s, i, h, w.heads, 0, D);
        for (auto& c : cells) {
          const double p = std::exp(c.second - L), *v = V(s, c.first, h / per), *k = K(s, c.first, h / per), *q = Q(s, i, h);
          double dp = 0;
          for (int e = 0; e < E; ++e)
            dp += d_o[e] * v[e];
          const double ds = p * (dp - delta);
          double *dk = &r.at(r.dk, s, c.first, h / per, w.kv_heads, 0, D), *dv = &r.at(r.dv, s, c.first, h / per, w.kv_heads, 0, D);
          for (int e = 0; e < E; ++e) {
            dq[e] += scale * ds * k[e];
            dk[e] += scale * ds * q[e];
            dv[e] += p * d_o[e];
          }
        }
      }
  }
  return r;
}

} // namespace emulator

} // namespace cpsim::backend
