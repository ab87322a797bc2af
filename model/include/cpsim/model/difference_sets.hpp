// Perfect difference sets for CQS-Attention (schedules.md 7.3-7.4): the sets shipped with the CQS
// repo for small W, and Singer's construction for W = q^2 + q + 1 with q any prime power, built in
// GF(q^3) (itself GF(p^{3m}) for q = p^m). A (W, k, 1) set has every nonzero residue mod W exactly
// once as a difference of two members, which is what makes the CQS partition exclusive.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace cpsim {

/** (p, m) with q = p^m, p prime; nullopt if q is not a prime power (q >= 2). */
std::optional<std::pair<int64_t, int>> prime_power(int64_t q);
/** q with W = q^2 + q + 1 and q a prime power, if any. */
std::optional<int64_t> singer_order(int64_t W);
/** Singer's (q^2+q+1, q+1, 1) set for a prime power q, sorted, containing 0. */
std::vector<int64_t> singer_difference_set(int64_t q);
/** The first interest set of the CQS repo for W in {3, 7, 13, 21, 31, 57, 73, 91}; empty otherwise. */
std::vector<int64_t> tabulated_difference_set(int64_t W);
/** True when every nonzero residue mod W occurs exactly once as a - b for a != b in d. */
bool is_perfect_difference_set(const std::vector<int64_t>& d, int64_t W);

} // namespace cpsim
