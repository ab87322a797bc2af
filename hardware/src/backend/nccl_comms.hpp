// The NCCL communicators of one rank: a non-blocking world communicator from the rendezvous id, and
// one split per CommSpec of the exec plan. Non-blocking so that every wait is a poll with a
// deadline: a peer that never answers ends in ncclCommAbort and an error, never a hang. It is the
// transport of ordinary runs: a posting is one ncclGroupStart/End of ncclSend/ncclRecv.
#pragma once

#include "transport.hpp"

#include "cpsim/hardware/backend/exec_plan.hpp"

#include <nccl.h>

#include <string>
#include <vector>

namespace cpsim::backend {

class NcclComms final : public Transport {
public:
  NcclComms(const ExecPlan& plan, int rank, int world, const std::string& rendezvous_dir, double timeout_s);
  ~NcclComms() override;
  NcclComms(const NcclComms&) = delete;
  NcclComms& operator=(const NcclComms&) = delete;

  ncclComm_t world() const { return world_; }
  /** Communicator of CommSpec i, or nullptr where this rank is not a member. */
  ncclComm_t comm(int i) const { return comms_[size_t(i)]; }
  /** Polls until no communicator has an operation in progress; throws on an async error or after the timeout. */
  void wait_ready(const std::string& what) const;
  /** Throws if any communicator reports an asynchronous error (a peer died, a network error). */
  void check_async(const std::string& what) const override;
  /** Aborts every communicator: in-flight NCCL kernels return, so the process can exit. */
  void abort_all() override;
  double timeout_s() const { return timeout_s_; }

  void attach(char* base, int64_t bytes) override;
  void begin_repetition() override {}
  /** One ncclGroupStart/End of the posting's sends and receives, then a poll until NCCL has enqueued them. */
  void post(const WirePosting& p, cudaStream_t st) override;
  std::string describe() const override;

private:
  ncclComm_t world_ = nullptr;
  std::vector<ncclComm_t> comms_;
  std::vector<std::vector<int>> members_; // world ranks of each communicator, in comm-rank order
  char* base_ = nullptr;
  int64_t bytes_ = 0;
  double timeout_s_;
  bool aborted_ = false;
};

} // namespace cpsim::backend
