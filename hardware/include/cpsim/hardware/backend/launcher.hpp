// Starts the W rank processes of a local run and watches them: the first rank that dies or fails
// ends the run, its siblings are killed, and the report names that rank and why. POSIX only, no
// CUDA, so the bookkeeping is tested in CI with ordinary programs as children.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace cpsim::backend {

struct ChildOutcome {
  int rank = -1;
  bool exited = false; // false: killed by a signal (or still running when the run was abandoned)
  int code = 0;
  int signal = 0;
  bool killed_by_launcher = false;
};

struct LaunchReport {
  bool ok = false;
  int failed_rank = -1;
  int exit_code = 0;      // what `cpsim run` should return
  std::string cause;      // "rank 1 was killed by signal 9 (Killed)", "timed out after 30 s", ...
  std::vector<ChildOutcome> outcomes;
};

/**
 * Runs argv_of(rank) for every rank with extra environment env_of(rank) and waits. On the first
 * failure the others get SIGTERM, then SIGKILL after grace_s. timeout_s bounds the whole run.
 */
LaunchReport launch_local(int world, const std::function<std::vector<std::string>(int)>& argv_of,
                          const std::function<std::vector<std::string>(int)>& env_of, double timeout_s,
                          double grace_s = 5.0);

/** "exited with code 3", "was killed by signal 9 (Killed)". */
std::string describe_outcome(const ChildOutcome& c);

} // namespace cpsim::backend
