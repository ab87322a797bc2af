// Argument checks and the rank -> device decision, kept GPU-free so CI tests them.
#include "cpsim/hardware/backend/run_options.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <cstdlib>

namespace cpsim::backend {

namespace {
int to_int(const std::string& s, const std::string& what) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < 0)
    throw UserError("--inject: '" + s + "' is not a valid " + what);
  return int(v);
}

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : -1;
}
} // namespace

Injection parse_injection(const std::string& spec) {
  Injection inj;
  if (spec.empty())
    return inj;
  std::vector<std::string> parts;
  size_t at = 0;
  while (true) {
    size_t c = spec.find(':', at);
    parts.push_back(spec.substr(at, c - at));
    if (c == std::string::npos)
      break;
    at = c + 1;
  }
  const std::string& k = parts[0];
  if (k == "die")
    inj.kind = InjectKind::DIE;
  else if (k == "hang")
    inj.kind = InjectKind::HANG;
  else if (k == "cuda")
    inj.kind = InjectKind::CUDA_ERROR;
  else
    throw UserError("--inject = \"" + spec + "\": kind must be die, hang or cuda (die:RANK[:OP], hang:RANK, cuda:RANK[:OP])");
  if (parts.size() < 2 || parts.size() > 3 || (inj.kind == InjectKind::HANG && parts.size() != 2))
    throw UserError("--inject = \"" + spec + "\": expected die:RANK[:OP], hang:RANK or cuda:RANK[:OP]");
  inj.rank = to_int(parts[1], "rank");
  if (parts.size() == 3)
    inj.op = to_int(parts[2], "op id");
  return inj;
}

void check_run_options(const RunOptions& o) {
  if (o.warmup < 0)
    throw UserError("--warmup = " + std::to_string(o.warmup) + ": must be >= 0");
  if (o.reps < 1)
    throw UserError("--reps = " + std::to_string(o.reps) + ": must be >= 1");
  if (o.profile_reps < 0)
    throw UserError("--profile-reps = " + std::to_string(o.profile_reps) + ": must be >= 0");
  if (!(o.timeout_s > 0))
    throw UserError("--timeout = " + std::to_string(o.timeout_s) + ": must be > 0 seconds");
  if (o.memory_limit_bytes < 0)
    throw UserError("--memory-limit: must be >= 0 bytes");
  parse_injection(o.inject);
  if (!o.loopback && (o.loopback_device >= 0 || !o.loopback_sync.empty()))
    throw UserError(std::string(o.loopback_device >= 0 ? "--loopback-device" : "--loopback-sync") +
                    " applies to --loopback runs only: add --loopback");
  if (o.loopback_device < -1)
    throw UserError("--loopback-device = " + std::to_string(o.loopback_device) + ": must be a CUDA device index >= 0");
  if (!o.loopback_sync.empty() && o.loopback_sync != "memops" && o.loopback_sync != "kernels")
    throw UserError("--loopback-sync = \"" + o.loopback_sync + "\": must be memops (stream memory operations) or kernels (spin kernels)");
}

ExternalRank external_rank_from_env() {
  ExternalRank e;
  const char* sets[][3] = {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
                           {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
                           {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"}};
  for (const auto& s : sets) {
    if (env_int(s[0]) >= 0 && env_int(s[1]) > 0) {
      e.rank = env_int(s[0]);
      e.world = env_int(s[1]);
      e.local_rank = env_int(s[2]);
      return e;
    }
  }
  return e;
}

int device_for_rank(const std::vector<int>& placement, int rank, int local_rank, int device_count) {
  if (device_count <= 0)
    throw UserError("no CUDA device is visible to rank " + std::to_string(rank));
  if (local_rank >= 0) // started by mpirun: the launcher of that node decides which GPUs are ours
    return local_rank % device_count;
  int gpu = rank < int(placement.size()) ? placement[size_t(rank)] : rank;
  return gpu % device_count;
}

int loopback_device(const RunOptions& o, int device_count) {
  const int d = std::max(o.loopback_device, 0);
  if (d >= device_count)
    throw UserError("--loopback-device = " + std::to_string(d) + ": this host has " + std::to_string(device_count) +
                    " CUDA device" + (device_count == 1 ? "" : "s") + (device_count > 0 ? " (0.." + std::to_string(device_count - 1) + ")" : ""));
  return d;
}

} // namespace cpsim::backend
