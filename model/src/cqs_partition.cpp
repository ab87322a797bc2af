// CQS partition, step by step as the CQS repo's Scheduler does it (gen_TG_Tk_map, gen_CQS,
// self_disstillation, gen_TL, gen_MtrlL), so that ties for relaxed sets fall the same way.
#include "cpsim/model/cqs_partition.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

std::pair<int64_t, int64_t> cqs_group_range(int64_t n, int W, int g) {
  const int64_t q = n / W, rem = n % W, bound = W - rem;
  if (g < bound)
    return {g * q, g * q + q};
  const int64_t b = g * q + (g - bound);
  return {b, b + q + 1};
}

CqsPartition cqs_partition(int W, const std::vector<int64_t>& I) {
  CqsPartition p;
  p.W = W;
  p.interest_set = I;
  p.owner.assign(size_t(W) * size_t(W), -1);
  p.cells.resize(size_t(W));
  p.material.resize(size_t(W));
  for (int i = 0; i < W; ++i) {
    std::vector<int> quorum;
    for (int64_t a : I)
      quorum.push_back(int((a + i) % W));
    std::vector<int> seen; // difference classes already taken by this worker
    std::vector<std::pair<int, int>> kept;
    for (size_t u = 0; u < quorum.size(); ++u)
      for (size_t v = u + 1; v < quorum.size(); ++v) {
        const int x = std::min(quorum[u], quorum[v]), y = std::max(quorum[u], quorum[v]);
        const int d1 = ((x - y) % W + W) % W, d2 = ((y - x) % W + W) % W;
        if (std::find(seen.begin(), seen.end(), d1) != seen.end())
          continue;
        seen.push_back(d1);
        if (d1 == d2) { // only for even W and |x - y| = W/2: the lower-index worker keeps it
          if (2 * i < W)
            kept.push_back({x, y});
        } else {
          seen.push_back(d2);
          kept.push_back({x, y});
        }
      }
    auto own = [&](int x, int y) {
      CPSIM_ASSERT(p.owner[size_t(x * W + y)] < 0, "CQS cell claimed twice: the interest set is not exclusive");
      p.owner[size_t(x * W + y)] = i;
      p.cells[size_t(i)].push_back({x, y});
    };
    own(i, i);
    std::vector<int>& mat = p.material[size_t(i)];
    mat.push_back(i);
    for (auto [x, y] : kept) {
      own(x, y);
      own(y, x);
      mat.push_back(x);
      mat.push_back(y);
    }
    std::sort(mat.begin(), mat.end());
    mat.erase(std::unique(mat.begin(), mat.end()), mat.end());
  }
  return p;
}

Json cqs_partition_to_json(const CqsPartition& p) {
  Json owner = Json::array();
  for (int x = 0; x < p.W; ++x) {
    Json row = Json::array();
    for (int y = 0; y < p.W; ++y)
      row.push_back(p.owner_of(x, y));
    owner.push_back(row);
  }
  return Json{{"W", p.W}, {"interest_set", p.interest_set}, {"owner", owner}, {"material", p.material}};
}

} // namespace cpsim
