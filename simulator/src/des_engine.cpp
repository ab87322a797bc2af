// SimGrid driver of the discrete-event engine. No actors: ops are started from a worklist as their
// predecessors finish, each compute op as an Exec on its GPU's host and each flow as a detached
// host-to-host Comm; one process-wide completion callback advances the worklist. Only the frontier
// of activities exists at any time (SimGrid 3.32 keeps detached comms in a list whose removal is
// linear in its length, simgrid.md pitfall 7).
#include "cpsim/simulator/des_engine.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/execution_graph.hpp"
#include "cpsim/simulator/collective_flows.hpp"
#include "cpsim/simulator/fabric.hpp"
#include "cpsim/simulator/replica_collapse.hpp"
#include "sg_platform.hpp"

#include <simgrid/s4u.hpp>
#include <xbt/log.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

namespace sg4 = simgrid::s4u;

namespace cpsim {

namespace {

// A host's speed is only a unit conversion: a compute op of t seconds is an Exec of t x this.
constexpr double kHostFlops = 1e9;

/** One in-flight SimGrid activity and what its completion means. */
struct Slot {
  enum Kind : int8_t { FREE, EXEC, P2P, COLL } kind = FREE;
  int replica = 0;                    // index into the simulated replicas
  int r1 = 0, i1 = 0, r2 = 0, i2 = 0; // EXEC: (r1, i1); P2P: send (r1, i1), recv (r2, i2); COLL: run r1, flow i1
  sg4::ActivityPtr activity;
};

/** A collective being executed as ring (or all-to-all) flows. */
struct CollRun {
  int replica = 0, rank = 0, op = 0; // one member's op: the collective's fields
  int n = 0, steps = 0;
  double start_s = 0, flow_bytes = 0;
  int64_t remaining = 0;
  std::vector<uint8_t> waiting; // ring: unfinished inputs of flow (step, member)
};

class DesRun;
DesRun *g_active = nullptr; // SimGrid's completion signal is process-wide; it dispatches here

class DesRun {
public:
  DesRun(const Schedule &s, const ClusterSpec &c, const KernelCostModel &k, DesStats &st)
      : s_(s), g_(s), fabric_(c), kernels_(k), st_(st) {}

  SimResult run(const Workload &w);
  void on_completion(const sg4::Activity &a);

private:
  size_t global(int replica, int rank, int op) const {
    return offset_[size_t(replica) * size_t(W_) + size_t(rank)] + size_t(op);
  }
  int64_t gpu(int replica, int rank) const { return replica_gpu(s_, sim_[size_t(replica)], rank); }
  sg4::Host *host(int replica, int rank) const { return hosts_[size_t(replica) * size_t(W_) + size_t(rank)]; }
  static double now() { return sg4::Engine::get_clock(); }

  void build_platform();
  void ready(int replica, int rank, int op);
  void finish(int replica, int rank, int op, double start_s, double end_s);
  void drain();
  int new_slot();
  void start_flow(int slot, int replica, int src_rank, int dst_rank, double bytes);
  void start_collective(int replica, int rank, int op);
  void start_coll_flow(int run, int flow);
  void flow_done(const Slot &sl);

  const Schedule &s_;
  ExecutionGraph g_;
  Fabric fabric_;
  const KernelCostModel &kernels_;
  DesStats &st_;
  int W_ = 0;
  std::vector<int> sim_;       // simulated replica indices
  std::vector<size_t> offset_; // (replica, rank) -> first global op index
  std::vector<sg4::Host *> hosts_;
  std::vector<int> missing_;
  std::vector<uint8_t> armed_, done_;
  std::vector<double> start_, end_;
  std::vector<int> coll_armed_;   // by the global index of a collective's lowest-rank member op
  std::vector<double> compute_s_; // per (rank, op) of replica 0, the same in every replica
  struct Pending {
    int replica, rank, op;
  };
  std::vector<Pending> work_;
  std::vector<Slot> slots_;
  std::vector<int> free_slots_;
  std::vector<CollRun> runs_;
  std::vector<int> free_runs_;
  std::vector<sg4::ActivityPtr> graveyard_; // released one callback later: SimGrid still holds `this`
  int depth_ = 0;
  double t0_ = 0;
  size_t finished_ = 0;
};

void DesRun::build_platform() {
  SgPlatform p = build_sg_platform(s_, fabric_, sim_, kHostFlops);
  hosts_ = std::move(p.hosts);
  st_.hosts = int64_t(hosts_.size());
  st_.links = p.links;
}

int DesRun::new_slot() {
  if (free_slots_.empty()) {
    slots_.emplace_back();
    return int(slots_.size() - 1);
  }
  int i = free_slots_.back();
  free_slots_.pop_back();
  return i;
}

void DesRun::start_flow(int slot, int replica, int src_rank, int dst_rank, double bytes) {
  ++st_.flows;
  if (gpu(replica, src_rank) == gpu(replica, dst_rank)) {
    Slot sl = slots_[size_t(slot)];
    slots_[size_t(slot)].kind = Slot::FREE;
    free_slots_.push_back(slot);
    flow_done(sl);
    return;
  }
  sg4::CommPtr c = sg4::Comm::sendto_init(host(replica, src_rank), host(replica, dst_rank));
  c->set_payload_size(uint64_t(std::llround(std::max(0.0, bytes))));
  c->set_data(reinterpret_cast<void *>(intptr_t(slot)));
  slots_[size_t(slot)].activity = c;
  c->start();
}

void DesRun::ready(int j, int r, int i) {
  const Op &op = s_.ranks[size_t(r)].ops[size_t(i)];
  const size_t gi = global(j, r, i);
  switch (op.kind) {
  case OpKind::ATTENTION:
  case OpKind::MERGE:
  case OpKind::COMPUTE: {
    const double dur = compute_s_[offset_[size_t(r)] + size_t(i)];
    if (dur <= 0) {
      finish(j, r, i, now(), now());
      return;
    }
    ++st_.execs;
    start_[gi] = now();
    int sl = new_slot();
    slots_[size_t(sl)] = Slot{Slot::EXEC, j, r, i, 0, 0, nullptr};
    sg4::ExecPtr e = sg4::Exec::init();
    e->set_flops_amount(dur * kHostFlops);
    e->set_host(host(j, r));
    e->set_data(reinterpret_cast<void *>(intptr_t(sl)));
    slots_[size_t(sl)].activity = e;
    e->start();
    return;
  }
  case OpKind::SEND:
  case OpKind::RECV: {
    armed_[gi] = 1;
    const OpRef p = g_.partners(r, i).front();
    if (!armed_[global(j, p.rank, p.op)])
      return; // the later of the two starts the transfer
    const OpRef snd = op.kind == OpKind::SEND ? OpRef{r, i} : p, rcv = op.kind == OpKind::SEND ? p : OpRef{r, i};
    start_[global(j, snd.rank, snd.op)] = start_[global(j, rcv.rank, rcv.op)] = now();
    int sl = new_slot();
    slots_[size_t(sl)] = Slot{Slot::P2P, j, snd.rank, snd.op, rcv.rank, rcv.op, nullptr};
    start_flow(sl, j, snd.rank, rcv.rank, double(op.bytes));
    return;
  }
  case OpKind::COLLECTIVE: {
    armed_[gi] = 1;
    const auto &members = g_.partners(r, i);
    const OpRef lead = members.front();
    if (++coll_armed_[global(j, lead.rank, lead.op)] == int(members.size()))
      start_collective(j, r, i);
    return;
  }
  }
}

void DesRun::start_collective(int j, int r, int i) {
  const Op &op = s_.ranks[size_t(r)].ops[size_t(i)];
  const int n = int(op.coll_group.size());
  int id;
  if (free_runs_.empty()) {
    runs_.emplace_back();
    id = int(runs_.size() - 1);
  } else {
    id = free_runs_.back();
    free_runs_.pop_back();
  }
  CollRun &run = runs_[size_t(id)];
  run.replica = j;
  run.rank = r;
  run.op = i;
  run.n = n;
  run.steps = ring_steps(op.coll, n);
  run.start_s = now();
  run.flow_bytes = step_bytes(op.coll, n, op.bytes);
  for (const OpRef &m : g_.partners(r, i))
    start_[global(j, m.rank, m.op)] = run.start_s;
  if (op.coll == CollectiveKind::ALL_TO_ALL) {
    run.remaining = int64_t(n) * (n - 1);
    run.waiting.clear();
    for (int a = 0; a < n; ++a)
      for (int b = 0; b < n; ++b)
        if (a != b)
          start_coll_flow(id, a * n + b);
  } else {
    run.remaining = int64_t(n) * run.steps;
    run.waiting.assign(size_t(n) * size_t(run.steps), 2);
    for (int m = 0; m < n; ++m)
      start_coll_flow(id, m);
  }
}

void DesRun::start_coll_flow(int id, int flow) {
  const CollRun &run = runs_[size_t(id)];
  const Op &op = s_.ranks[size_t(run.rank)].ops[size_t(run.op)];
  int src, dst;
  if (op.coll == CollectiveKind::ALL_TO_ALL) {
    src = op.coll_group[size_t(flow / run.n)];
    dst = op.coll_group[size_t(flow % run.n)];
  } else {
    const int m = flow % run.n; // member m sends to its ring successor
    src = op.coll_group[size_t(m)];
    dst = op.coll_group[size_t((m + 1) % run.n)];
  }
  int sl = new_slot();
  slots_[size_t(sl)] = Slot{Slot::COLL, run.replica, id, flow, 0, 0, nullptr};
  start_flow(sl, run.replica, src, dst, run.flow_bytes);
}

void DesRun::flow_done(const Slot &sl) {
  if (sl.kind == Slot::P2P) {
    const double st = start_[global(sl.replica, sl.r1, sl.i1)];
    finish(sl.replica, sl.r1, sl.i1, st, now());
    finish(sl.replica, sl.r2, sl.i2, st, now());
    return;
  }
  CollRun &run = runs_[size_t(sl.r1)];
  const int flow = sl.i1;
  if (!run.waiting.empty()) { // ring: release the member's next step and its successor's
    const int step = flow / run.n, m = flow % run.n;
    if (step + 1 < run.steps)
      for (int t : {m, (m + 1) % run.n}) {
        const int next = (step + 1) * run.n + t;
        if (--run.waiting[size_t(next)] == 0)
          start_coll_flow(sl.r1, next);
      }
  }
  if (--run.remaining > 0)
    return;
  const int j = run.replica;
  const double st = run.start_s;
  const std::vector<OpRef> members = g_.partners(run.rank, run.op);
  free_runs_.push_back(sl.r1);
  for (const OpRef &m : members)
    finish(j, m.rank, m.op, st, now());
}

void DesRun::finish(int j, int r, int i, double start_s, double end_s) {
  const size_t gi = global(j, r, i);
  CPSIM_ASSERT(!done_[gi], "op finished twice");
  done_[gi] = 1;
  start_[gi] = start_s;
  end_[gi] = end_s;
  ++finished_;
  for (int succ : g_.succs(r, i))
    if (--missing_[global(j, r, succ)] == 0)
      work_.push_back({j, r, succ});
}

void DesRun::drain() {
  while (!work_.empty()) {
    Pending p = work_.back();
    work_.pop_back();
    ready(p.replica, p.rank, p.op);
  }
}

void DesRun::on_completion(const sg4::Activity &a) {
  if (depth_ == 0)
    graveyard_.clear();
  ++depth_;
  const int sl = int(reinterpret_cast<intptr_t>(a.get_data<void>()));
  CPSIM_ASSERT(sl >= 0 && size_t(sl) < slots_.size() && slots_[size_t(sl)].kind != Slot::FREE,
               "completion of an unknown activity");
  Slot done = std::move(slots_[size_t(sl)]);
  slots_[size_t(sl)].kind = Slot::FREE;
  free_slots_.push_back(sl);
  graveyard_.push_back(std::move(done.activity));
  if (done.kind == Slot::EXEC)
    finish(done.replica, done.r1, done.i1, start_[global(done.replica, done.r1, done.i1)], now());
  else
    flow_done(done);
  drain();
  --depth_;
}

SimResult DesRun::run(const Workload &w) {
  W_ = s_.world;
  for (int k = 0; k < std::max(1, s_.replicas); ++k)
    for (int r = 0; r < W_; ++r)
      if (int64_t g = replica_gpu(s_, k, r); g < 0 || g >= fabric_.gpus())
        throw UserError("parallel.dp = " + std::to_string(s_.replicas) + ": replica " + std::to_string(k) +
                        " puts rank " + std::to_string(r) + " on GPU " + std::to_string(g) + " but the hardware has " +
                        std::to_string(fabric_.gpus()) + " GPUs");
  const std::vector<RankPair> pairs = flow_pairs(s_);
  ReplicaCollapse col = collapse_replicas(s_, fabric_, pairs);
  sim_ = col.simulated;
  st_.replicas = std::max(1, s_.replicas);
  st_.simulated_replicas = int(sim_.size());
  st_.components = col.components;
  st_.classes = col.classes;

  offset_.resize(sim_.size() * size_t(W_) + 1);
  size_t total = 0;
  for (size_t j = 0; j < sim_.size(); ++j)
    for (int r = 0; r < W_; ++r) {
      offset_[j * size_t(W_) + size_t(r)] = total;
      total += s_.ranks[size_t(r)].ops.size();
    }
  offset_.back() = total;
  const size_t per_replica = sim_.empty() ? 0 : offset_[size_t(W_)];
  missing_.resize(total);
  armed_.assign(total, 0);
  done_.assign(total, 0);
  start_.assign(total, 0.0);
  end_.assign(total, 0.0);
  coll_armed_.assign(total, 0);
  compute_s_.assign(per_replica, 0.0);
  for (int r = 0; r < W_; ++r)
    for (const Op &op : s_.ranks[size_t(r)].ops) {
      double &d = compute_s_[offset_[size_t(r)] + size_t(op.id)];
      if (op.kind == OpKind::ATTENTION)
        d = kernels_.attention_s(op);
      else if (op.kind == OpKind::MERGE)
        d = kernels_.merge_s(op);
      else if (op.kind == OpKind::COMPUTE)
        d = kernels_.compute_s(op);
    }

  // Quiet unless asked: SimGrid logs at INFO by default (CPSIM_SIMGRID_LOG=root.thres:info to see it).
  const char *log = std::getenv("CPSIM_SIMGRID_LOG");
  xbt_log_control_set(log ? log : "root.thres:critical");
  int argc = 1;
  char arg0[] = "cpsim";
  char *argv[] = {arg0, nullptr};
  sg4::Engine engine(&argc, argv);
  xbt_log_control_set(log ? log : "root.thres:critical");
  static bool configured = false;
  if (!configured) {
    // Pure max-min sharing, no TCP artefacts: right for NVLink and RDMA fabrics (simgrid.md 1.3).
    sg4::Engine::set_config("network/model:CM02");
    sg4::Engine::set_config("network/crosstraffic:0");
    sg4::Engine::set_config("network/TCP-gamma:0");
    // Expert override for experiments (e.g. "network/optim:Full"): space-separated key:value.
    if (const char *extra = std::getenv("CPSIM_SIMGRID_CFG")) {
      std::string all = extra, item;
      for (size_t b = 0; b < all.size();) {
        size_t e = all.find(' ', b);
        item = all.substr(b, e == std::string::npos ? std::string::npos : e - b);
        if (!item.empty())
          sg4::Engine::set_config(item);
        b = e == std::string::npos ? all.size() : e + 1;
      }
    }
    sg4::Activity::on_completion_cb([](const sg4::Activity &a) {
      if (g_active != nullptr)
        g_active->on_completion(a);
    });
    configured = true;
  }
  build_platform();

  g_active = this;
  t0_ = now();
  for (size_t j = 0; j < sim_.size(); ++j)
    for (int r = 0; r < W_; ++r)
      for (const Op &op : s_.ranks[size_t(r)].ops) {
        int m = int(g_.preds(r, op.id).size());
        missing_[global(int(j), r, op.id)] = m;
        if (m == 0)
          work_.push_back({int(j), r, op.id});
      }
  std::reverse(work_.begin(), work_.end()); // start in rank order; only matters for ties
  const auto wall0 = std::chrono::steady_clock::now();
  drain();
  engine.run();
  st_.run_wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  g_active = nullptr;
  graveyard_.clear();
  for (auto &sl : slots_)
    sl.activity = nullptr;

  if (finished_ != total) {
    for (size_t j = 0; j < sim_.size(); ++j)
      for (int r = 0; r < W_; ++r)
        for (const Op &op : s_.ranks[size_t(r)].ops)
          if (!done_[global(int(j), r, op.id)])
            throw UserError("plan deadlocks: rank " + std::to_string(r) + " op " + std::to_string(op.id) + " (" +
                            to_string(op.kind) + " '" + op.label + "') can never start; " +
                            std::to_string(total - finished_) + " ops never ran");
  }
  // Report the slowest simulated replica: the data-parallel step waits for it.
  size_t worst = 0;
  double worst_end = -1;
  for (size_t j = 0; j < sim_.size(); ++j) {
    double e = 0;
    for (size_t gi = offset_[j * size_t(W_)]; gi < offset_[(j + 1) * size_t(W_)]; ++gi)
      e = std::max(e, end_[gi]);
    if (e > worst_end + 1e-15) {
      worst_end = e;
      worst = j;
    }
  }
  st_.reported_replica = sim_.empty() ? 0 : sim_[worst];
  std::vector<OpRecord> records;
  records.reserve(per_replica);
  for (int r = 0; r < W_; ++r)
    for (const Op &op : s_.ranks[size_t(r)].ops) {
      const size_t gi = global(int(worst), r, op.id);
      records.push_back({r, op.id, start_[gi] - t0_, end_[gi] - t0_});
    }
  return summarize(s_, w, std::move(records), "des");
}

} // namespace

SimResult run_des(const Schedule &s, const Workload &w, const ClusterSpec &c, const KernelCostModel &kernels,
                  DesStats *stats) {
  DesStats local;
  DesStats &st = stats ? *stats : local;
  const auto t0 = std::chrono::steady_clock::now();
  DesRun run(s, c, kernels, st);
  SimResult r = run.run(w);
  st.setup_wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - st.run_wall_s;
  return r;
}

} // namespace cpsim
