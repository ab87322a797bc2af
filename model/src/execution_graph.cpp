// Builds predecessor/successor lists and partner links from a validated schedule.
#include "cpsim/model/execution_graph.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <map>
#include <tuple>

namespace cpsim {

ExecutionGraph::ExecutionGraph(const Schedule& s) {
  const size_t W = static_cast<size_t>(s.world);
  preds_.resize(W);
  succs_.resize(W);
  partners_.resize(W);
  std::map<std::tuple<int, int, int>, OpRef> sends, recvs;
  std::map<int, std::vector<OpRef>> colls;
  for (size_t r = 0; r < W; ++r) {
    const auto& ops = s.ranks[r].ops;
    preds_[r].resize(ops.size());
    succs_[r].resize(ops.size());
    partners_[r].resize(ops.size());
    // per stream: ops of the previous slot and of the current slot
    std::vector<std::vector<int>> prev_slot(s.streams.size()), cur_slot(s.streams.size());
    std::vector<int> cur_group(s.streams.size(), -2);
    for (const Op& op : ops) {
      auto st = size_t(op.stream);
      if (op.group < 0 || op.group != cur_group[st]) {
        if (!cur_slot[st].empty())
          prev_slot[st] = cur_slot[st];
        cur_slot[st].clear();
        cur_group[st] = op.group < 0 ? -2 : op.group;
      }
      cur_slot[st].push_back(op.id);
      auto& p = preds_[r][size_t(op.id)];
      p = op.deps;
      p.insert(p.end(), prev_slot[st].begin(), prev_slot[st].end());
      std::sort(p.begin(), p.end());
      p.erase(std::unique(p.begin(), p.end()), p.end());
      for (int d : p)
        succs_[r][size_t(d)].push_back(op.id);
      if (op.group < 0) { // a lone op closes its slot at once
        prev_slot[st] = cur_slot[st];
        cur_slot[st].clear();
      }
      OpRef self{int(r), op.id};
      if (op.kind == OpKind::SEND)
        sends[{int(r), op.peer, op.tag}] = self;
      else if (op.kind == OpKind::RECV)
        recvs[{op.peer, int(r), op.tag}] = self;
      else if (op.kind == OpKind::COLLECTIVE)
        colls[op.tag].push_back(self);
    }
  }
  for (const auto& [key, snd] : sends) {
    auto it = recvs.find(key);
    CPSIM_ASSERT(it != recvs.end(), "unmatched send in a validated schedule");
    partners_[size_t(snd.rank)][size_t(snd.op)] = {it->second};
    partners_[size_t(it->second.rank)][size_t(it->second.op)] = {snd};
  }
  for (const auto& [tag, members] : colls)
    for (const OpRef& m : members)
      partners_[size_t(m.rank)][size_t(m.op)] = members;
}

} // namespace cpsim
