// Peak memory per rank by sweeping buffer lifetimes over the rank's op list (issue order).
#include "cpsim/model/memory_model.hpp"

namespace cpsim {

MemoryUse rank_memory(const RankProgram& p) {
  const int n = static_cast<int>(p.ops.size());
  std::vector<int64_t> delta(static_cast<size_t>(n) + 1, 0);
  MemoryUse m;
  for (const Buffer& b : p.buffers) {
    if (b.alloc_op < 0 && b.free_op < 0) {
      m.persistent_bytes += b.bytes;
      continue;
    }
    int a = b.alloc_op < 0 ? 0 : b.alloc_op;
    int f = b.free_op < 0 ? n - 1 : b.free_op;
    delta[size_t(a)] += b.bytes;
    delta[size_t(f) + 1] -= b.bytes;
  }
  int64_t live = 0;
  m.peak_bytes = m.persistent_bytes;
  for (int i = 0; i < n; ++i) {
    live += delta[size_t(i)];
    if (m.persistent_bytes + live > m.peak_bytes) {
      m.peak_bytes = m.persistent_bytes + live;
      m.peak_op = i;
    }
  }
  return m;
}

std::vector<MemoryUse> schedule_memory(const Schedule& s) {
  std::vector<MemoryUse> out;
  for (const auto& p : s.ranks)
    out.push_back(rank_memory(p));
  return out;
}

} // namespace cpsim
