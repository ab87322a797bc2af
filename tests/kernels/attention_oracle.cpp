// fp64 attention over explicit visible-key lists: the yardstick of every kernel test.
#include "attention_oracle.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cpsim::kernels::test {

OracleForward oracle_forward(const OracleProblem& p) {
  const int D = p.head_dim;
  OracleForward f;
  f.o.assign(size_t(p.q_rows * p.heads * D), 0.0);
  f.lse.assign(size_t(p.q_rows * p.heads), -std::numeric_limits<double>::infinity());
  const int hpk = p.heads / p.kv_heads;
  std::vector<double> s;
  for (int64_t i = 0; i < p.q_rows; ++i)
    for (int h = 0; h < p.heads; ++h) {
      const auto& keys = p.keys_of(h, i);
      if (keys.empty())
        continue;
      const int g = h / hpk;
      const double* q = &p.q[size_t((i * p.heads + h) * D)];
      s.assign(keys.size(), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < keys.size(); ++j) {
        const double* k = &p.k[size_t((keys[j] * p.kv_heads + g) * D)];
        double dot = 0;
        for (int d = 0; d < D; ++d)
          dot += q[d] * k[d];
        s[j] = dot * p.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (double x : s)
        sum += std::exp(x - mx);
      const double lse = mx + std::log(sum);
      f.lse[size_t(i * p.heads + h)] = lse;
      double* o = &f.o[size_t((i * p.heads + h) * D)];
      for (size_t j = 0; j < keys.size(); ++j) {
        const double w = std::exp(s[j] - lse);
        const double* v = &p.v[size_t((keys[j] * p.kv_heads + g) * D)];
        for (int d = 0; d < D; ++d)
          o[d] += w * v[d];
      }
    }
  return f;
}

OracleBackward oracle_backward(const OracleProblem& p, const std::vector<double>& o, const std::vector<double>& lse,
                               const std::vector<double>& dout) {
  const int D = p.head_dim, hpk = p.heads / p.kv_heads;
  OracleBackward b;
  b.dq.assign(p.q.size(), 0.0);
  b.dk.assign(p.k.size(), 0.0);
  b.dv.assign(p.v.size(), 0.0);
  for (int64_t i = 0; i < p.q_rows; ++i)
    for (int h = 0; h < p.heads; ++h) {
      const double L = lse[size_t(i * p.heads + h)];
      const auto& keys = p.keys_of(h, i);
      if (keys.empty() || std::isinf(L))
        continue;
      const int g = h / hpk;
      const size_t qi = size_t((i * p.heads + h) * D);
      double delta = 0;
      for (int d = 0; d < D; ++d)
        delta += dout[qi + size_t(d)] * o[qi + size_t(d)];
      for (int64_t kr : keys) {
        const size_t ki = size_t((kr * p.kv_heads + g) * D);
        double s = 0, dp = 0;
        for (int d = 0; d < D; ++d) {
          s += p.q[qi + size_t(d)] * p.k[ki + size_t(d)];
          dp += dout[qi + size_t(d)] * p.v[ki + size_t(d)];
        }
        const double pr = std::exp(s * p.scale - L);
        const double ds = pr * (dp - delta);
        for (int d = 0; d < D; ++d) {
          b.dv[ki + size_t(d)] += pr * dout[qi + size_t(d)];
          b.dq[qi + size_t(d)] += ds * p.scale * p.k[ki + size_t(d)];
          b.dk[ki + size_t(d)] += ds * p.scale * p.q[qi + size_t(d)];
        }
      }
    }
  return b;
}

} // namespace cpsim::kernels::test
