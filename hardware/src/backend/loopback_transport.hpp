// The loopback transport: every rank of a plan on one GPU, one process per rank as in ordinary runs
// (NCCL refuses two ranks on one device). Each rank exports its memory and an array of completion flags
// with CUDA IPC, the handles passing through the rendezvous directory; a receive copies straight out of
// the sender's memory at the address the wire plan paired it with. Signalling is on the streams
// (cuStreamWriteValue32 / cuStreamWaitValue32, or spin kernels): a send writes "ready" into the
// receiver's flag and holds its stream until the receiver's "consumed"; a receive holds its stream until
// "ready", copies, then writes "consumed". The host only enqueues, so it never waits for a peer, and
// flags carry the repetition's number, so they are never reset. Processes rather than threads keep what
// is process-wide (CUPTI, the watchdog's _exit, the reference's statics) one per rank, as with NCCL.
#pragma once

#include "transport.hpp"

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/backend/run_options.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <map>
#include <vector>

namespace cpsim::backend {

class LoopbackTransport final : public Transport {
public:
  /** Call with the device current. Rank 0 decides whether every rank fits on it (GpuError naming the sizes if not);
   *  the others wait for that decision before anyone allocates. */
  LoopbackTransport(const Schedule& s, const ExecPlan& plan, const WirePlan& wire, const Workload& w, const RunOptions& o,
                    int device);
  ~LoopbackTransport() override;
  LoopbackTransport(const LoopbackTransport&) = delete;
  LoopbackTransport& operator=(const LoopbackTransport&) = delete;

  /** Exports this rank's memory and flags, then opens every peer's (waits, bounded, for their handles); creates
   *  the side streams, so that none is created during a timed repetition. */
  void attach(char* base, int64_t bytes) override;
  void begin_repetition() override { ++epoch_; }
  void post(const WirePosting& p, cudaStream_t st) override;
  /** Nothing to poll: a peer that fails ends the run through the launcher, one that hangs in wait_done's deadline. */
  void check_async(const std::string&) const override {}
  /** Nothing to abort: streams held on a flag are released when the process exits. */
  void abort_all() override {}
  std::string describe() const override;
  /** Closes the peers' memory, then waits (bounded) until every peer has closed this rank's: an exported allocation
   *  must outlive its importers' mappings. Call after the last posting, before the memory is freed. */
  void detach();

private:
  struct Fanout { // side streams that let the receives of one posting wait for their peers independently
    cudaEvent_t fork = nullptr;
    std::vector<cudaStream_t> streams;
    std::vector<cudaEvent_t> joins;
  };
  void receive(const WirePart& part, cudaStream_t st);
  void write_flag(uint32_t* flag, cudaStream_t st);
  void wait_flag(const uint32_t* flag, cudaStream_t st);

  const RankWire& wire_;
  const RunOptions& opt_;
  int rank_;
  int world_;
  int device_;
  size_t ir_streams_;
  bool memops_ = false;
  void* wait_value_ = nullptr;  // cuStreamWaitValue32, from the driver at run time (no link-time libcuda)
  void* write_value_ = nullptr; // cuStreamWriteValue32
  uint32_t epoch_ = 0;
  char* base_ = nullptr;
  int64_t bytes_ = 0;
  uint32_t* flags_ = nullptr;
  std::vector<char*> peer_base_;
  std::vector<int64_t> peer_bytes_;
  std::vector<uint32_t*> peer_flags_;
  std::vector<int> peer_flag_count_;
  std::map<int, Fanout> fanouts_; // IR stream -> side streams for its postings with several receives
  bool detached_ = false;
};

} // namespace cpsim::backend
