// Options of `cpsim run` and the hand-over to the GPU backend.
#include "run_command.hpp"

#include "inputs.hpp"

#include "cpsim/model/errors.hpp"

#include <cstdio>
#include <filesystem>

#if CPSIM_HAVE_BACKEND
#include "cpsim/hardware/backend/run.hpp"
#endif

namespace cpsim {

CLI::App* add_run_command(CLI::App& app, backend::RunOptions& o) {
  auto* r = app.add_subcommand("run", "Execute the schedule on real GPUs (CUDA + NCCL) and measure it like 'simulate'");
  r->add_option("input", o.input, "Scenario JSON or plan JSON (from 'cpsim plan')")->required();
  r->add_option("--json", o.json_out, "Write the measured result (simulate's format plus per-op times) to this file");
  r->add_option("--trace", o.trace_out, "Write a Chrome/Perfetto trace of what ran (ops and CUPTI kernels)");
  r->add_flag("--check", o.check, "Compare outputs (and dQ/dK/dV) with single-GPU attention; fail beyond bf16 tolerance");
  r->add_option("--warmup", o.warmup, "Untimed repetitions first")->capture_default_str();
  r->add_option("--reps", o.reps, "Timed repetitions (the median is reported)")->capture_default_str();
  r->add_option("--profile-reps", o.profile_reps, "Extra repetitions under CUPTI kernel tracing (0: none)")->capture_default_str();
  r->add_option("--timeout", o.timeout_s, "Seconds without progress after which a rank aborts")->capture_default_str();
  r->add_option("--memory-limit", o.memory_limit_bytes, "Pretend the GPU has this many free bytes (tests the out-of-memory path)");
  r->add_option("--inject", o.inject, "Failure injection for tests: die:RANK[:OP], hang:RANK, cuda:RANK[:OP]");
  r->add_flag("--comm-only", o.comm_only, "Skip compute ops: measure the plan's communication alone");
  r->add_flag("--loopback", o.loopback,
              "Run every rank on one GPU (a loopback transport in place of NCCL), e.g. --check of a 4-rank plan on a "
              "one-GPU machine; the ranks time-share the GPU, so the times are not the plan's");
  r->add_option("--loopback-device", o.loopback_device, "The CUDA device of a --loopback run (default 0)");
  r->add_option("--loopback-sync", o.loopback_sync,
                "How --loopback ranks signal each other: memops (stream memory operations, the default where the "
                "driver has them) or kernels (spin kernels)");
  r->add_flag("-q,--quiet", o.quiet, "Do not print the table");
  r->add_option("--rank", o.rank, "(internal) run only this rank")->group("");
  r->add_option("--world", o.world, "(internal) ranks of the run")->group("");
  r->add_option("--rendezvous", o.rendezvous_dir, "Directory where ranks meet (shared by all nodes under mpirun)");
  return r;
}

int cmd_run(const backend::RunOptions& o) {
  backend::check_run_options(o); // bad options are named the same with or without the backend
#if CPSIM_HAVE_BACKEND
  LoadedInput in = load_input(o.input);
  std::vector<std::string> self{std::filesystem::read_symlink("/proc/self/exe").string(), "run", o.input,
                                "--warmup", std::to_string(o.warmup), "--reps", std::to_string(o.reps),
                                "--profile-reps", std::to_string(o.profile_reps), "--timeout", std::to_string(o.timeout_s),
                                "--memory-limit", std::to_string(o.memory_limit_bytes)};
  if (!o.inject.empty())
    self.insert(self.end(), {"--inject", o.inject});
  if (o.check)
    self.push_back("--check");
  if (o.comm_only)
    self.push_back("--comm-only");
  if (o.loopback)
    self.push_back("--loopback");
  if (o.loopback_device >= 0)
    self.insert(self.end(), {"--loopback-device", std::to_string(o.loopback_device)});
  if (!o.loopback_sync.empty())
    self.insert(self.end(), {"--loopback-sync", o.loopback_sync});
  return backend::run_backend(in.schedule, in.scenario, o, self);
#else
  (void)o;
  std::fprintf(stderr, "cpsim: error: 'cpsim run' needs the GPU backend, and this cpsim was built without it "
                       "(configure with CUDA, NCCL and CUPTI present and -DCPSIM_WITH_CUDA=ON)\n");
  return 2;
#endif
}

} // namespace cpsim
