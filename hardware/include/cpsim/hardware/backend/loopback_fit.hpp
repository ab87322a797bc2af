// Whether every rank of a --loopback run fits on its one GPU, decided before any rank allocates: the
// ranks' arenas and staging, --check's single-GPU reference (every rank computes one at the end, at about
// the same time) and an allowance per rank process for what it loads later. CPU only, so the sums and
// the message are unit-tested; rank 0 applies it to the free memory it measures once every rank's CUDA
// context exists.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/model/workload.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim::backend {

struct LoopbackNeed {
  std::vector<int64_t> rank_bytes;     // arena + collective staging of each rank
  int64_t check_bytes_per_rank = 0;    // --check's whole-workload reference tensors (0 without --check)
  int64_t allowance_per_rank_bytes = 0; // attention kernels loaded on first launch, their plans, CUPTI buffers
  int64_t total_bytes() const;
};

/** What a loopback run of `plan` needs on its GPU; `check` adds --check's reference (forward, or forward and backward). */
LoopbackNeed loopback_need(const ExecPlan& plan, const Workload& w, bool check, bool backward);

/** Empty when `need` fits in `free_bytes`; otherwise one line naming every size, for the error. */
std::string loopback_fit_error(const LoopbackNeed& need, int64_t free_bytes, int device);

} // namespace cpsim::backend
