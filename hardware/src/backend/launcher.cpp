// fork/exec of the rank processes and the watchdog loop over waitpid.
#include "cpsim/hardware/backend/launcher.hpp"

#include "cpsim/model/errors.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace cpsim::backend {

namespace {
using Clock = std::chrono::steady_clock;

pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  CPSIM_ASSERT(!argv.empty(), "empty argv for a rank process");
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0); // own process group: a kill reaches the rank's helpers too
    for (const auto& kv : env)
      putenv(const_cast<char*>(kv.c_str()));
    execvp(args[0], args.data());
    std::fprintf(stderr, "cpsim: cannot start '%s': %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  return pid;
}

ChildOutcome outcome_of(int rank, int status) {
  ChildOutcome c;
  c.rank = rank;
  if (WIFEXITED(status)) {
    c.exited = true;
    c.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    c.signal = WTERMSIG(status);
  }
  return c;
}
} // namespace

std::string describe_outcome(const ChildOutcome& c) {
  if (c.exited)
    return "exited with code " + std::to_string(c.code);
  if (c.signal)
    return "was killed by signal " + std::to_string(c.signal) + " (" + strsignal(c.signal) + ")";
  return "did not finish";
}

LaunchReport launch_local(int world, const std::function<std::vector<std::string>(int)>& argv_of,
                          const std::function<std::vector<std::string>(int)>& env_of, double timeout_s,
                          double grace_s) {
  LaunchReport rep;
  std::vector<pid_t> pids(size_t(world), -1);
  rep.outcomes.resize(size_t(world));
  for (int r = 0; r < world; ++r) {
    rep.outcomes[size_t(r)].rank = r;
    pids[size_t(r)] = spawn(argv_of(r), env_of(r));
  }
  const auto t0 = Clock::now();
  int running = world;
  Clock::time_point kill_deadline{};
  bool terminating = false;
  auto terminate_all = [&](int sig) {
    for (int r = 0; r < world; ++r)
      if (pids[size_t(r)] > 0) {
        kill(-pids[size_t(r)], sig);
        rep.outcomes[size_t(r)].killed_by_launcher = true;
      }
  };
  while (running > 0) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < world; ++r)
        if (pids[size_t(r)] == pid) {
          bool by_us = rep.outcomes[size_t(r)].killed_by_launcher;
          rep.outcomes[size_t(r)] = outcome_of(r, status);
          rep.outcomes[size_t(r)].killed_by_launcher = by_us;
          pids[size_t(r)] = -1;
          --running;
          const ChildOutcome& c = rep.outcomes[size_t(r)];
          bool failed = !(c.exited && c.code == 0);
          if (failed && !terminating) {
            rep.failed_rank = r;
            rep.cause = "rank " + std::to_string(r) + " " + describe_outcome(c);
            rep.exit_code = c.exited && c.code != 0 ? c.code : 3;
            terminating = true;
            terminate_all(SIGTERM);
            kill_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
          }
        }
      continue;
    }
    if (pid < 0 && errno != EINTR)
      break;
    double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!terminating && elapsed > timeout_s) {
      rep.cause = "the run did not finish within " + std::to_string(int(timeout_s)) + " s; every rank was stopped";
      rep.exit_code = 3;
      terminating = true;
      terminate_all(SIGTERM);
      kill_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
    }
    if (terminating && Clock::now() > kill_deadline)
      terminate_all(SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  rep.ok = !terminating;
  return rep;
}

} // namespace cpsim::backend
