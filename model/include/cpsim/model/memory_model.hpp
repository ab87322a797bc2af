// Memory model: peak bytes per rank from the buffers the schedule declares (persistent Q, K, V,
// O, LSE, gradients; in-flight KV and partial buffers between their first and last use).
#pragma once

#include "cpsim/model/schedule.hpp"

#include <cstdint>
#include <vector>

namespace cpsim {

struct MemoryUse {
  int64_t peak_bytes = 0;
  int peak_op = -1;          // op index at which the peak is reached
  int64_t persistent_bytes = 0; // buffers alive for the whole program
};

MemoryUse rank_memory(const RankProgram& p);
std::vector<MemoryUse> schedule_memory(const Schedule& s);

} // namespace cpsim
