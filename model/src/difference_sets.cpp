// Perfect difference sets: the CQS repo's table and Singer's construction. Singer: with alpha a
// primitive element of GF(q^3) and Tr the GF(q)-linear trace GF(q^3) -> GF(q), the exponents i mod
// W = (q^3-1)/(q-1) with Tr(alpha^i) = 0 form a (W, q+1, 1) difference set (the trace-zero plane
// is a line of the projective plane PG(2, q)). GF(q^3) is built as GF(p)[x]/(f) with f primitive of
// degree n = 3m, so alpha = x; the trace is the linear map I + F + F^2, F the q-th power Frobenius.
#include "cpsim/model/difference_sets.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

namespace {

using Poly = std::vector<int64_t>; // coefficients over GF(p), degree < n, low order first

struct Field {
  int64_t p = 0;
  int n = 0;
  Poly f; // monic modulus, f[n] == 1 implied; f holds coefficients 0..n-1

  Poly mul(const Poly& a, const Poly& b) const {
    std::vector<int64_t> r(size_t(2 * n - 1), 0);
    for (int i = 0; i < n; ++i)
      if (a[size_t(i)] != 0)
        for (int j = 0; j < n; ++j)
          r[size_t(i + j)] = (r[size_t(i + j)] + a[size_t(i)] * b[size_t(j)]) % p;
    for (int d = 2 * n - 2; d >= n; --d) { // x^n = -sum f_i x^i
      int64_t c = r[size_t(d)];
      if (c == 0)
        continue;
      r[size_t(d)] = 0;
      for (int i = 0; i < n; ++i)
        r[size_t(d - n + i)] = ((r[size_t(d - n + i)] - c * f[size_t(i)]) % p + p) % p;
    }
    r.resize(size_t(n));
    return r;
  }
  Poly pow(Poly a, uint64_t e) const {
    Poly r(size_t(n), 0);
    r[0] = 1;
    while (e > 0) {
      if (e & 1)
        r = mul(r, a);
      a = mul(a, a);
      e >>= 1;
    }
    return r;
  }
  Poly x() const { // n = 3m >= 3 here
    Poly r(size_t(n), 0);
    r[1] = 1;
    return r;
  }
  bool is_one(const Poly& a) const {
    if (a[0] != 1)
      return false;
    return std::all_of(a.begin() + 1, a.end(), [](int64_t c) { return c == 0; });
  }
};

std::vector<uint64_t> prime_factors(uint64_t v) {
  std::vector<uint64_t> out;
  for (uint64_t d = 2; d * d <= v; ++d)
    if (v % d == 0) {
      out.push_back(d);
      while (v % d == 0)
        v /= d;
    }
  if (v > 1)
    out.push_back(v);
  return out;
}

uint64_t ipow(uint64_t b, int e) {
  uint64_t r = 1;
  while (e-- > 0)
    r *= b;
  return r;
}

/** A monic primitive polynomial of degree n over GF(p): x has multiplicative order p^n - 1. */
Field primitive_field(int64_t p, int n) {
  const uint64_t order = ipow(uint64_t(p), n) - 1;
  const std::vector<uint64_t> factors = prime_factors(order);
  Field F{p, n, Poly(size_t(n), 0)};
  for (uint64_t code = 0;; ++code) { // enumerate coefficient vectors; f0 != 0
    uint64_t c = code;
    for (int i = 0; i < n; ++i) {
      F.f[size_t(i)] = int64_t(c % uint64_t(p));
      c /= uint64_t(p);
    }
    CPSIM_ASSERT(c == 0, "no primitive polynomial found");
    if (F.f[0] == 0)
      continue;
    const Poly x = F.x();
    if (!F.is_one(F.pow(x, order)))
      continue;
    bool primitive = true;
    for (uint64_t r : factors)
      primitive = primitive && !F.is_one(F.pow(x, order / r));
    if (primitive)
      return F;
  }
}

} // namespace

std::optional<std::pair<int64_t, int>> prime_power(int64_t q) {
  if (q < 2)
    return std::nullopt;
  for (int64_t p = 2; p * p <= q; ++p)
    if (q % p == 0) {
      int m = 0;
      while (q % p == 0) {
        q /= p;
        ++m;
      }
      if (q != 1)
        return std::nullopt;
      return std::make_pair(p, m);
    }
  return std::make_pair(q, 1);
}

std::optional<int64_t> singer_order(int64_t W) {
  for (int64_t q = 2; q * q + q + 1 <= W; ++q)
    if (q * q + q + 1 == W && prime_power(q))
      return q;
  return std::nullopt;
}

std::vector<int64_t> singer_difference_set(int64_t q) {
  const auto pm = prime_power(q);
  CPSIM_ASSERT(pm.has_value(), "Singer sets need a prime-power order");
  const int64_t p = pm->first, W = q * q + q + 1;
  const int n = 3 * pm->second;
  const Field F = primitive_field(p, n);
  // Frobenius y -> y^q is GF(p)-linear: column j is (x^j)^q. Trace matrix T = I + F + F^2.
  std::vector<Poly> frob(static_cast<size_t>(n));
  Poly xj(size_t(n), 0);
  xj[0] = 1;
  const Poly x = F.x();
  for (int j = 0; j < n; ++j) {
    frob[size_t(j)] = F.pow(xj, uint64_t(q));
    xj = F.mul(xj, x);
  }
  auto apply = [&](const std::vector<Poly>& cols, const Poly& v) {
    Poly r(size_t(n), 0);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < n; ++i)
        r[size_t(i)] = (r[size_t(i)] + cols[size_t(j)][size_t(i)] * v[size_t(j)]) % p;
    return r;
  };
  std::vector<int64_t> d;
  Poly a(size_t(n), 0);
  a[0] = 1; // alpha^0
  for (int64_t i = 0; i < W; ++i) {
    // alpha^(i+W) = alpha^i * c with c in GF(q)*, and Tr is GF(q)-linear: i mod W decides.
    Poly f1 = apply(frob, a), f2 = apply(frob, f1);
    bool zero = true;
    for (int k = 0; k < n; ++k)
      zero = zero && (a[size_t(k)] + f1[size_t(k)] + f2[size_t(k)]) % p == 0;
    if (zero)
      d.push_back(i);
    a = F.mul(a, x);
  }
  CPSIM_ASSERT(int64_t(d.size()) == q + 1, "Singer construction gave a set of the wrong size");
  const int64_t shift = d.front();
  for (auto& v : d)
    v = (v - shift + W) % W;
  std::sort(d.begin(), d.end());
  CPSIM_ASSERT(is_perfect_difference_set(d, W), "Singer construction is not a perfect difference set");
  return d;
}

std::vector<int64_t> tabulated_difference_set(int64_t W) {
  switch (W) {
  case 3: return {0, 1};
  case 7: return {0, 1, 3};
  case 13: return {0, 1, 3, 9};
  case 21: return {0, 1, 4, 14, 16};
  case 31: return {0, 1, 3, 8, 12, 18};
  case 57: return {0, 1, 3, 13, 32, 36, 43, 52};
  case 73: return {0, 1, 3, 7, 15, 31, 36, 54, 63};
  case 91: return {0, 1, 3, 9, 27, 49, 56, 61, 77, 81};
  default: return {};
  }
}

bool is_perfect_difference_set(const std::vector<int64_t>& d, int64_t W) {
  if (W < 2)
    return false;
  std::vector<int> seen(size_t(W), 0);
  for (size_t a = 0; a < d.size(); ++a)
    for (size_t b = 0; b < d.size(); ++b)
      if (a != b) {
        int64_t diff = ((d[a] - d[b]) % W + W) % W;
        if (diff == 0)
          return false; // repeated member
        ++seen[size_t(diff)];
      }
  for (int64_t r = 1; r < W; ++r)
    if (seen[size_t(r)] != 1)
      return false;
  return true;
}

} // namespace cpsim
