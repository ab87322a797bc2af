// Worklist propagation of earliest start times over the execution graph (see analytic_engine.hpp).
#include "cpsim/simulator/analytic_engine.hpp"

#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/execution_graph.hpp"

#include <algorithm>

namespace cpsim {

SimResult run_analytic(const Schedule& s, const Workload& w, const ClusterSpec& c, const KernelCostModel& kernels) {
  return run_analytic(s, w, kernels, CommCostModel(c, s.placement));
}

SimResult run_analytic(const Schedule& s, const Workload& w, const KernelCostModel& kernels, const CommTimeModel& comm) {
  ExecutionGraph g(s);
  const size_t W = size_t(s.world);
  std::vector<std::vector<int>> missing(W);  // unfinished preds per op
  std::vector<std::vector<double>> ready(W), end(W);
  std::vector<std::vector<char>> done(W), armed(W);
  std::vector<OpRef> work;
  for (size_t r = 0; r < W; ++r) {
    size_t n = s.ranks[r].ops.size();
    missing[r].resize(n);
    ready[r].assign(n, 0.0);
    end[r].assign(n, 0.0);
    done[r].assign(n, 0);
    armed[r].assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      missing[r][i] = static_cast<int>(g.preds(int(r), int(i)).size());
      if (missing[r][i] == 0)
        work.push_back({int(r), int(i)});
    }
  }
  std::vector<OpRecord> records;
  size_t total = 0;
  for (const auto& p : s.ranks)
    total += p.ops.size();
  records.reserve(total);

  auto finish = [&](OpRef o, double start, double duration) {
    done[size_t(o.rank)][size_t(o.op)] = 1;
    double e = start + duration;
    end[size_t(o.rank)][size_t(o.op)] = e;
    records.push_back({o.rank, o.op, start, e});
    for (int sidx : g.succs(o.rank, o.op)) {
      auto& rd = ready[size_t(o.rank)][size_t(sidx)];
      rd = std::max(rd, e);
      if (--missing[size_t(o.rank)][size_t(sidx)] == 0)
        work.push_back({o.rank, sidx});
    }
  };

  while (!work.empty()) {
    OpRef o = work.back();
    work.pop_back();
    const Op& op = s.ranks[size_t(o.rank)].ops[size_t(o.op)];
    double t = ready[size_t(o.rank)][size_t(o.op)];
    switch (op.kind) {
    case OpKind::ATTENTION: finish(o, t, kernels.attention_s(op)); break;
    case OpKind::MERGE: finish(o, t, kernels.merge_s(op)); break;
    case OpKind::COMPUTE: finish(o, t, kernels.compute_s(op)); break;
    case OpKind::SEND:
    case OpKind::RECV:
    case OpKind::COLLECTIVE: {
      armed[size_t(o.rank)][size_t(o.op)] = 1;
      const auto& partners = g.partners(o.rank, o.op);
      bool all = true;
      double start = t;
      for (const OpRef& p : partners) {
        all &= armed[size_t(p.rank)][size_t(p.op)] != 0;
        start = std::max(start, ready[size_t(p.rank)][size_t(p.op)]);
      }
      if (!all)
        break; // the last partner to become ready starts the transfer
      double dur = 0;
      if (op.kind == OpKind::COLLECTIVE) {
        dur = comm.collective_s(op.coll, op.coll_group, op.bytes);
      } else {
        int src = op.kind == OpKind::SEND ? o.rank : op.peer, dst = op.kind == OpKind::SEND ? op.peer : o.rank;
        dur = comm.p2p_s(src, dst, op.bytes);
      }
      finish(o, start, dur);
      for (const OpRef& p : partners)
        if (!(p == o))
          finish(p, start, dur);
      break;
    }
    }
  }
  if (records.size() != total) {
    for (size_t r = 0; r < W; ++r)
      for (size_t i = 0; i < s.ranks[r].ops.size(); ++i)
        if (!done[r][i]) {
          const Op& op = s.ranks[r].ops[i];
          throw UserError("plan deadlocks: rank " + std::to_string(r) + " op " + std::to_string(i) + " (" +
                          to_string(op.kind) + " '" + op.label + "') can never start; " +
                          std::to_string(total - records.size()) + " ops never ran");
        }
  }
  return summarize(s, w, std::move(records), "analytic");
}

} // namespace cpsim
