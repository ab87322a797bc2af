// Replays one rank's exec plan on its GPU: a CUDA stream per IR stream, a CUDA event per slot
// boundary (cross-stream dependencies wait on them, and they time every op), NCCL groups for
// send/recv slots, grouped send/recv for collectives, the attention adapter for compute.
#pragma once

#include "compute_ops.hpp"
#include "nccl_comms.hpp"

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/backend/run_options.hpp"
#include "cpsim/model/scenario.hpp"

#include <cuda_runtime.h>

#include <array>
#include <vector>

namespace cpsim::backend {

struct OpTime {
  int op = 0;
  double start_s = 0;
  double end_s = 0;
};

class RankExecutor {
public:
  RankExecutor(const Schedule& s, const Scenario& sc, const ExecPlan& plan, int rank, NcclComms& comms,
               const RunOptions& opt);
  ~RankExecutor();
  RankExecutor(const RankExecutor&) = delete;
  RankExecutor& operator=(const RankExecutor&) = delete;

  /** Allocates arena + staging; throws GpuError naming the sizes when they do not fit. */
  void allocate();
  /** Deterministic inputs (q, k, v, dO) by global position. */
  void fill_inputs();
  /** One repetition; waits for it under the watchdog. `inject` arms the failure injection. */
  std::vector<OpTime> run_once(bool inject);

  void* ptr(int buffer) const;
  int64_t allocated_bytes() const { return allocated_bytes_; }
  const RankExecPlan& plan() const { return rp_; }
  cudaStream_t stream(int i) const { return streams_[size_t(i)]; }

private:
  void issue_slot(size_t i, bool inject);
  void issue_p2p(const Slot& sl, cudaStream_t st);
  void issue_collective(const Op& op, cudaStream_t st);
  void issue_attention(const Op& op, cudaStream_t st);
  void issue_merge(const Op& op, cudaStream_t st);
  void wait_done();
  HeadBlock block_of(int buffer, int plane = 0) const;

  const Schedule& s_;
  const Scenario& sc_;
  const ExecPlan& plan_;
  const RankExecPlan& rp_;
  int rank_;
  NcclComms& comms_;
  const RunOptions& opt_;
  MaskGeometry mask_;
  Injection inj_;
  std::vector<cudaStream_t> streams_;
  std::vector<cudaEvent_t> start_, end_;
  cudaEvent_t t0_ = nullptr;
  char* arena_ = nullptr;
  int64_t allocated_bytes_ = 0;
  std::vector<int> first_acc_writer_; // per buffer: the op that zeroes an accumulator before writing it
};

} // namespace cpsim::backend
