// How the executor's sends and receives reach the peers: NCCL (a GPU per rank) or the loopback
// transport (every rank on one GPU, for --check where one GPU is all there is). The executor posts the
// wire plan's postings through this interface and nothing else, so the two differ only in how bytes
// move, never in what a posting means: it starts all its parts together, a send completes on the
// sender's stream once its bytes have left the buffer, a receive on the receiver's stream once they
// have arrived, and the host never waits for a peer while posting.
#pragma once

#include "cpsim/hardware/backend/wire_plan.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace cpsim::backend {

class Transport {
public:
  virtual ~Transport() = default;
  /** The rank's device memory, [base, base + bytes): the arena, then collective staging. Called once, before the first posting. */
  virtual void attach(char* base, int64_t bytes) = 0;
  /** Called before the first posting of every repetition (warm-up, timed and profiled alike). */
  virtual void begin_repetition() = 0;
  /** Posts one group of sends and receives on stream `st`. */
  virtual void post(const WirePosting& p, cudaStream_t st) = 0;
  /** Throws GpuError if a failure is already known (an asynchronous NCCL error); `what` says what was awaited. */
  virtual void check_async(const std::string& what) const = 0;
  /** Lets in-flight communication return so that the process can leave after an error. */
  virtual void abort_all() = 0;
  /** For reports: "nccl", "loopback (stream memory operations)", ... */
  virtual std::string describe() const = 0;
};

} // namespace cpsim::backend
