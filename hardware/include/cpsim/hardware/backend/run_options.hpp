// Options of `cpsim run`, shared by the launcher, the rank processes and the argument checks.
// Failure injection exists so that the dying-rank, hang and out-of-memory paths are testable on demand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim::backend {

enum class InjectKind { NONE, DIE, HANG, CUDA_ERROR };

struct Injection {
  InjectKind kind = InjectKind::NONE;
  int rank = -1;
  int op = 0; // the rank fails when it reaches this op (DIE, CUDA_ERROR) of the first timed repetition
};

struct RunOptions {
  std::string input;
  std::string json_out;
  std::string trace_out;
  bool check = false;
  int warmup = 3;
  int reps = 10;
  int profile_reps = 5;      // extra repetitions under CUPTI (kernel records, overhead); 0: no profiling
  double timeout_s = 120;    // a rank that sees no progress for this long aborts its communicators
  int64_t memory_limit_bytes = 0; // > 0: treat the device as having this much free memory (tests of the OOM path)
  std::string inject;        // die:RANK[:OP] | hang:RANK | cuda:RANK[:OP]
  bool comm_only = false;    // skip compute ops: measures the communication of the plan alone (no --check)
  // every rank on one GPU through the loopback transport instead of NCCL: checks a multi-rank plan's numerics
  // where one GPU is all there is; the ranks time-share it, so its times are not those of the plan
  bool loopback = false;
  int loopback_device = -1;        // the CUDA device of a loopback run; -1: not given (device 0)
  std::string loopback_sync;       // how loopback ranks signal each other: memops | kernels; empty: memops where the driver has them
  bool quiet = false;
  // set by the launcher (or read from mpirun's environment) for one rank's process
  int rank = -1;
  int world = 0;
  std::string rendezvous_dir;
};

/** Throws UserError for bad values (names the option). */
void check_run_options(const RunOptions& o);
Injection parse_injection(const std::string& spec);

/** Rank and world from mpirun/srun's environment (OMPI_COMM_WORLD_*, PMI_*, SLURM_*); rank -1 when absent. */
struct ExternalRank {
  int rank = -1;
  int world = 0;
  int local_rank = -1;
};
ExternalRank external_rank_from_env();

/** The CUDA device a rank uses: its placement GPU modulo the devices this host has; under --loopback the one device
 *  every rank shares (UserError if this host has no such device). */
int device_for_rank(const std::vector<int>& placement, int rank, int local_rank, int device_count);
int loopback_device(const RunOptions& o, int device_count);

} // namespace cpsim::backend
