// The CQS-Attention scheduler's partition (schedules.md 7.2): W token groups, cyclic quorums from an
// interest set, the distillation that keeps one index pair per difference class, and from it the
// worker owning each group cell of the score matrix and each worker's material list. Shared by the
// cqs schedule generator, its tests and the ownership picture written by `cpsim cqs-map`.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <cstdint>
#include <utility>
#include <vector>

namespace cpsim {

struct CqsPartition {
  int W = 0;
  std::vector<int64_t> interest_set;
  std::vector<int> owner;                       // W x W, row-major: owner[x * W + y] of group cell (x, y)
  std::vector<std::vector<std::pair<int, int>>> cells; // per worker: owned group cells (diagonal first)
  std::vector<std::vector<int>> material;       // per worker: groups it needs, sorted
  int owner_of(int x, int y) const { return owner[size_t(x * W + y)]; }
};

/** Tokens [begin, end) of group g when n tokens are cut into W groups (the first W - n%W hold n/W). */
std::pair<int64_t, int64_t> cqs_group_range(int64_t n, int W, int g);

/** The partition for `interest_set` (file order kept: it breaks ties); -1 owners never remain. */
CqsPartition cqs_partition(int W, const std::vector<int64_t>& interest_set);

/** {"W", "interest_set", "owner": [[...] per row], "material": [[...] per worker]} for plotting. */
Json cqs_partition_to_json(const CqsPartition& p);

} // namespace cpsim
