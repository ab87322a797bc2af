// Makespans of CTA grids against closed forms: whole and partial waves, lone CTAs at their own rate, a long tail,
// and the weights that express the makespan as a sum of class costs.
#include "cpsim/model/sm_schedule.hpp"

#include <catch2/catch.hpp>

#include <numeric>

using namespace cpsim;

namespace {
double weighted(const GridMakespan& m, const std::vector<double>& cost) {
  return std::inner_product(m.weights.begin(), m.weights.end(), cost.begin(), 0.0);
}
} // namespace

TEST_CASE("model::sm_schedule: equal CTAs take whole waves on full SMs") {
  const SmGrid g{10, 2, 1.0};
  for (int64_t n : {20, 40, 60}) {
    const auto m = grid_makespan({3.0}, {n}, g);
    CHECK(m.seconds == Approx(3.0 * double(n) / 20));
    CHECK(weighted(m, {3.0}) == Approx(m.seconds));
  }
}

TEST_CASE("model::sm_schedule: a lone CTA runs at its own rate, a partial wave at the rates of its SMs") {
  // 10 SMs x 2 slots, a lone CTA takes 0.7 of its time on a full SM
  const SmGrid g{10, 2, 0.7};
  // one CTA per SM: each alone
  CHECK(grid_makespan({1.0}, {10}, g).seconds == Approx(0.7));
  // 21 CTAs: two waves' worth on SM 0 (3 CTAs), the others hold two. SM 0 runs its first two at the shared rate
  // (1.0), then the third alone (0.7)
  auto m = grid_makespan({1.0}, {21}, g);
  CHECK(m.seconds == Approx(1.7));
  CHECK(weighted(m, {1.0}) == Approx(1.7));
  // with slots = 4 a pair runs at min(4/2, 1/0.7): the lone-CTA cap, not a 2x speed-up
  const SmGrid g4{10, 4, 0.7};
  CHECK(grid_makespan({1.0}, {20}, g4).seconds == Approx(0.7));
}

TEST_CASE("model::sm_schedule: longest first; the makespan's weights reproduce it for any costs") {
  // 2 SMs x 1 slot, costs 5, 4, 3, 3: LPT puts 5 | 4, then 3 on the 4-slot (7), then 3 on the 5-slot (8)
  const SmGrid g{2, 1, 1.0};
  const std::vector<double> cost{3.0, 5.0, 4.0};
  const auto m = grid_makespan(cost, {2, 1, 1}, g);
  CHECK(m.seconds == Approx(8.0));
  CHECK(m.weights == std::vector<double>{1.0, 1.0, 0.0});
  // unequal classes with a drain on partly filled SMs: the weights still sum to the makespan
  const SmGrid h{3, 2, 0.6};
  const std::vector<double> c2{1.0, 2.5, 0.4, 7.0};
  const auto m2 = grid_makespan(c2, {5, 3, 9, 2}, h);
  CHECK(weighted(m2, c2) == Approx(m2.seconds));
  CHECK(m2.seconds >= 7.0 * 0.6);
}

TEST_CASE("model::sm_schedule: no CTA takes no time") {
  const auto m = grid_makespan({1.0, 2.0}, {0, 0}, {4, 2, 0.5});
  CHECK(m.seconds == 0);
  CHECK(m.weights == std::vector<double>{0.0, 0.0});
}

TEST_CASE("model::sm_schedule: many equal CTAs placed in whole rounds give what one at a time gives") {
  // 5 SMs x 2 slots; unequal CTAs first, then 57 equal ones (rounds of 10 placed at once), then a tail
  const SmGrid g{5, 2, 0.75};
  const std::vector<double> cost{9.0, 4.0, 3.0, 1.0};
  const std::vector<int64_t> count{3, 2, 57, 4};
  const auto batched = grid_makespan(cost, count, g);
  // the same CTAs as classes of one: no class has enough CTAs for a round
  std::vector<double> c1;
  std::vector<int64_t> n1;
  for (size_t i = 0; i < cost.size(); ++i)
    for (int64_t k = 0; k < count[i]; ++k) {
      c1.push_back(cost[i]);
      n1.push_back(1);
    }
  const auto single = grid_makespan(c1, n1, g);
  CHECK(batched.seconds == Approx(single.seconds));
  std::vector<double> folded(cost.size(), 0.0);
  for (size_t i = 0, j = 0; i < cost.size(); ++i)
    for (int64_t k = 0; k < count[i]; ++k)
      folded[i] += single.weights[j++];
  for (size_t i = 0; i < cost.size(); ++i)
    CHECK(batched.weights[i] == Approx(folded[i]));
}
