// Helpers of the head x context hybrids (USP, LoongTrain): reading a pair of degrees whose product
// must be cp, the divisors a search enumerates, and the token part each head-group member holds
// before the all-to-all gathers its group's ring tokens.
#pragma once

#include "cpsim/model/errors.hpp"
#include "cpsim/model/scenario.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace cpsim::hybrid {

/** `parallel.<key>` as a positive integer, or `absent` when the key is not given. */
inline int option_int(const Scenario& sc, const std::string& key, int absent) {
  const Json& o = sc.parallel.options;
  if (!o.contains(key))
    return absent;
  const Json& v = o.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > sc.parallel.cp)
    throw UserError("'parallel." + key + "' = " + v.dump() + ": must be an integer in [1, cp = " +
                    std::to_string(sc.parallel.cp) + "]");
  return v.get<int>();
}

/** Reads degrees a (key_a) and b (key_b) with a x b = cp; either may be left out and is derived. */
inline std::pair<int, int> degrees(const Scenario& sc, const std::string& key_a, const std::string& key_b,
                                   const std::string& scheme) {
  const int cp = sc.parallel.cp;
  int a = option_int(sc, key_a, 0), b = option_int(sc, key_b, 0);
  if (a == 0 && b == 0)
    throw UserError("'parallel." + key_a + "': scheme '" + scheme + "' needs '" + key_a + "' or '" + key_b +
                    "' (their product is cp = " + std::to_string(cp) + ")");
  for (auto [key, v] : std::initializer_list<std::pair<std::string, int>>{{key_a, a}, {key_b, b}})
    if (v != 0 && cp % v != 0)
      throw UserError("'parallel." + key + "' = " + std::to_string(v) + ": must divide cp (" + std::to_string(cp) + ")");
  if (a == 0)
    a = cp / b;
  if (b == 0)
    b = cp / a;
  if (a * b != cp)
    throw UserError("'parallel." + key_b + "' = " + std::to_string(b) + ": " + key_a + " x " + key_b + " = " +
                    std::to_string(a * b) + " must equal cp (" + std::to_string(cp) + ")");
  return {a, b};
}

inline std::vector<int> divisors(int n) {
  std::vector<int> d;
  for (int i = 1; i <= n; ++i)
    if (n % i == 0)
      d.push_back(i);
  return d;
}

/**
 * Part `idx` of `parts` equal parts of a token set, per sequence, taken over the set's slices in
 * order (yunchang's extract_local: concatenate the ring chunks, then chunk by the Ulysses degree).
 */
inline std::vector<TokenSlice> split_part(const std::vector<TokenSlice>& set, int parts, int idx) {
  std::vector<TokenSlice> out;
  for (size_t i = 0; i < set.size();) {
    size_t j = i;
    int64_t n = 0;
    for (; j < set.size() && set[j].seq == set[i].seq; ++j)
      n += set[j].range.size();
    const int64_t lo = n / parts * idx, hi = n / parts * (idx + 1);
    int64_t at = 0;
    for (size_t k = i; k < j; ++k) {
      const TokenRange& r = set[k].range;
      int64_t a = std::max(lo - at, int64_t(0)), b = std::min(hi - at, r.size());
      if (a < b)
        out.push_back({set[k].seq, sub_range(r, a, b)});
      at += r.size();
    }
    i = j;
  }
  return out;
}

} // namespace cpsim::hybrid
