// The rank process (see the header).
#include "rank_main.hpp"

#include "gpu_check.hpp"
#include "kernel_profiler.hpp"
#include "loopback_transport.hpp"
#include "nccl_comms.hpp"
#include "rank_executor.hpp"
#include "result_check.hpp"

#include "cpsim/hardware/backend/rendezvous.hpp"
#include "cpsim/model/errors.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <cstdlib>
#include <memory>
#include <unistd.h>

namespace cpsim::backend {

namespace {
Json device_json(int dev) {
  cudaDeviceProp p{};
  BK_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  int drv = 0, rt = 0, nccl = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  ncclGetVersion(&nccl);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return {{"index", dev}, {"name", p.name}, {"pci_bus", p.pciBusID}, {"sm_count", p.multiProcessorCount},
          {"memory_bytes", int64_t(p.totalGlobalMem)}, {"cuda_driver", drv}, {"cuda_runtime", rt},
          {"nccl", nccl}, {"host", host}};
}

/** One write per message: the ranks share the launcher's stderr, and fprintf's pieces interleaved there. */
void say(std::string line) {
  line += "\n";
  for (size_t off = 0; off < line.size();) {
    const ssize_t n = ::write(2, line.data() + off, line.size() - off);
    if (n <= 0)
      return;
    off += size_t(n);
  }
}

Json times_json(const std::vector<OpTime>& t) {
  Json a = Json::array();
  for (const auto& x : t)
    a.push_back({x.op, x.start_s, x.end_s});
  return a;
}
} // namespace

int run_rank(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const WirePlan& wire, const RunOptions& o,
             int local_rank) {
  const int rank = o.rank;
  setenv("NCCL_NVLS_ENABLE", "0", 1); // NVLink multicast stays off on shared hosts
  // loopback: every stream its own hardware queue, so that a stream held on a peer's flag holds no other (default 8)
  if (o.loopback)
    setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 0);
  std::unique_ptr<Transport> comms;
  LoopbackTransport* loopback = nullptr;
  int dev = -1;
  try {
    int count = 0;
    BK_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (!o.loopback && local_rank < 0 && o.world > count)
      throw UserError("the plan has " + std::to_string(o.world) + " ranks but this host has " + std::to_string(count) +
                      " GPUs; use mpirun across nodes (or --loopback, which checks the numerics of every rank on one GPU)");
    dev = o.loopback ? loopback_device(o, count) : device_for_rank(s.placement, rank, local_rank, count);
    if (const cudaError_t e = cudaSetDevice(dev); e == cudaErrorDevicesUnavailable && o.loopback)
      throw GpuError("GPU " + std::to_string(dev) + " takes no further process (compute mode exclusive-process or " +
                     "prohibited?); --loopback runs one process per rank on it, which `nvidia-smi -c DEFAULT` allows");
    else
      BK_CUDA_CHECK(e);
    Json report{{"rank", rank}, {"device", device_json(dev)}};
    if (o.loopback) {
      auto lb = std::make_unique<LoopbackTransport>(s, plan, wire, sc.workload, o, dev);
      loopback = lb.get();
      comms = std::move(lb);
    } else {
      comms = std::make_unique<NcclComms>(plan, rank, o.world, o.rendezvous_dir, o.timeout_s);
    }
    report["transport"] = comms->describe();
    RankExecutor ex(s, sc, plan, wire, rank, *comms, o);
    ex.allocate();
    size_t free_b = 0, total_b = 0;
    BK_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const RankExecPlan& rp = plan.ranks[size_t(rank)];
    report["memory"] = {{"allocated_bytes", ex.allocated_bytes()}, {"arena_bytes", rp.arena_bytes},
                        {"staging_bytes", rp.staging_bytes}, {"predicted_peak_bytes", rp.predicted_peak_bytes},
                        {"working_set_bytes", rp.working_set_bytes},
                        {"device_used_bytes", int64_t(total_b - free_b)}, {"device_total_bytes", int64_t(total_b)}};
    ex.fill_inputs();
    ex.prepare();
    // last line of defence against a hang: whatever call the main thread is stuck in (the in-loop timeouts
    // did not fire when a peer slept on 2 H100s, 2026-11-27), the rank leaves with its cause named
    std::atomic<bool> finished{false};
    const Injection& inj = ex.injection();
    const std::string cause = inj.kind == InjectKind::HANG && inj.rank == rank
                                  ? "this rank hangs by --inject " + o.inject
                                  : "a peer may have died or hung";
    std::thread watchdog([&] {
      const int64_t limit_ns = int64_t((1.5 * o.timeout_s + 5) * 1e9);
      while (!finished) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now().time_since_epoch()).count();
        if (ex.busy() && now - ex.last_progress_ns() > limit_ns) {
          say("cpsim: rank " + std::to_string(rank) + " (GPU " + std::to_string(dev) + "): watchdog: no progress for " +
              std::to_string(int(double(now - ex.last_progress_ns()) * 1e-9)) + " s while " + ex.where() + "; " +
              cause);
          _exit(3);
        }
      }
    });
    struct Join {
      std::atomic<bool>& f;
      std::thread& t;
      ~Join() {
        f = true;
        t.join();
      }
    } join{finished, watchdog};
    for (int i = 0; i < o.warmup; ++i)
      ex.run_once(false);
    Json reps = Json::array();
    for (int i = 0; i < o.reps; ++i)
      reps.push_back(times_json(ex.run_once(i == 0)));
    report["reps"] = reps;
    if (o.profile_reps > 0) {
      KernelProfiler prof;
      Json preps = Json::array();
      std::vector<OpTime> last_times;
      uint64_t last_rep_ns = 0;
      // one enable for all profiled repetitions: with an enable/flush per repetition the overhead read 50-950 % (H200, 2026-11-23); unverified that this is the cause
      prof.start();
      for (int i = 0; i < o.profile_reps; ++i) {
        last_rep_ns = KernelProfiler::now_ns();
        last_times = ex.run_once(false);
        preps.push_back(times_json(last_times));
      }
      std::vector<KernelRecord> all = prof.stop(), last;
      for (const auto& k : all)
        if (k.start_ns >= last_rep_ns)
          last.push_back(k);
      double first_op = 1e30;
      for (const auto& t : last_times)
        first_op = std::min(first_op, t.start_s);
      report["profiled_reps"] = preps;
      report["kernel_records"] = kernel_records_json(last, first_op); // aligned on the first op: approximate
      report["kernel_summary"] = kernel_summary_json(all, o.profile_reps);
    }
    if (o.check) // last: the reference's memory comes after every timed repetition
      report["check"] = check_results(ex, s, sc);
    publish_file(o.rendezvous_dir, "rank_" + std::to_string(rank) + ".json", report.dump());
    if (loopback)
      loopback->detach(); // before the executor frees what the peers have open
    return 0;
  } catch (const UserError& e) {
    say("cpsim: rank " + std::to_string(rank) + ": error: " + e.what());
    if (loopback)
      _exit(2); // freeing the transport's memory could wait on streams held by a peer's flag
    if (comms)
      comms->abort_all();
    return 2;
  } catch (const std::exception& e) {
    say("cpsim: rank " + std::to_string(rank) + " (GPU " + std::to_string(dev) + "): " + e.what());
    std::fflush(stderr);
    // ncclCommAbort may itself wait on a kernel stuck on the dead peer (suspected in the 2026-11-23
    // hang test): give it a few seconds on its own thread, then leave regardless
    if (comms && !loopback) { // the loopback transport has nothing to abort
      std::thread([c = comms.get()] { c->abort_all(); }).detach();
      std::this_thread::sleep_for(std::chrono::seconds(3));
    }
    _exit(3); // skip destructors: CUDA objects of a failed context must not block the exit
  }
}

} // namespace cpsim::backend
