// Memory of a --loopback run (see the header).
#include "cpsim/hardware/backend/loopback_fit.hpp"

#include <cstdio>

namespace cpsim::backend {

namespace {
// Not measured: a rank's process loads the attention kernels on their first launch and uploads their plans after
// the fit is decided; on one H200 a one-rank run used 1.2 GiB beyond its buffers, context and NCCL included
// (results/backend/2026-12-02_h200), and the context is already counted when rank 0 measures the free memory.
constexpr int64_t kAllowancePerRankBytes = int64_t(512) << 20;

std::string gib(int64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / double(int64_t(1) << 30));
  return s;
}
} // namespace

int64_t LoopbackNeed::total_bytes() const {
  int64_t t = 0;
  for (int64_t b : rank_bytes)
    t += b + check_bytes_per_rank + allowance_per_rank_bytes;
  return t;
}

LoopbackNeed loopback_need(const ExecPlan& plan, const Workload& w, bool check, bool backward) {
  LoopbackNeed n;
  for (const RankExecPlan& rp : plan.ranks)
    n.rank_bytes.push_back(rp.arena_bytes + rp.staging_bytes);
  n.allowance_per_rank_bytes = kAllowancePerRankBytes;
  if (check) { // the tensors result_check.cpp allocates: bf16 q, k, v, o, fp32 lse; backward adds dO, fp32 dQ, dK, dV
    const int64_t rows = w.total_tokens();
    const int64_t q = rows * w.heads * w.head_dim * 2, kv = rows * w.kv_heads * w.head_dim * 2;
    n.check_bytes_per_rank = 2 * q + 2 * kv + rows * w.heads * 4;
    if (backward)
      n.check_bytes_per_rank += q + 2 * q + 2 * kv;
  }
  return n;
}

std::string loopback_fit_error(const LoopbackNeed& need, int64_t free_bytes, int device) {
  if (need.total_bytes() <= free_bytes)
    return "";
  const size_t world = need.rank_bytes.size();
  int64_t buffers = 0;
  std::string per_rank;
  for (size_t r = 0; r < world; ++r) {
    buffers += need.rank_bytes[r];
    per_rank += (r ? ", " : "") + gib(need.rank_bytes[r]);
  }
  const std::string w = std::to_string(world);
  std::string msg = "--loopback: the " + w + " ranks need " + gib(need.total_bytes()) + " together on GPU " +
                    std::to_string(device) + " (buffers and staging " + gib(buffers) + ": " + per_rank + "; ";
  if (need.check_bytes_per_rank > 0)
    msg += "--check's reference " + w + " x " + gib(need.check_bytes_per_rank) + "; ";
  msg += "an allowance of " + w + " x " + gib(need.allowance_per_rank_bytes) + " for the kernels each rank loads) but " +
         gib(free_bytes) + " are free; shorten the workload or use fewer ranks";
  return msg;
}

} // namespace cpsim::backend
