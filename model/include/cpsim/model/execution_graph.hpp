// The execution semantics of the IR made explicit once, for every executor: each op's
// predecessors (its deps plus the previous slot of its stream, a slot being one op or one group of
// ops posted together) and the cross-rank pairing of sends with receives and of collectives.
#pragma once

#include "cpsim/model/schedule.hpp"

#include <vector>

namespace cpsim {

struct OpRef {
  int rank = -1;
  int op = -1;
  bool operator==(const OpRef&) const = default;
};

class ExecutionGraph {
public:
  explicit ExecutionGraph(const Schedule& s);

  /** Same-rank ops that must finish before op (rank, op) may start. */
  const std::vector<int>& preds(int rank, int op) const { return preds_[size_t(rank)][size_t(op)]; }
  /** Same-rank ops that list (rank, op) among their preds. */
  const std::vector<int>& succs(int rank, int op) const { return succs_[size_t(rank)][size_t(op)]; }
  /** For SEND/RECV: the matching op on the peer; for COLLECTIVE: every member's op (self included). */
  const std::vector<OpRef>& partners(int rank, int op) const { return partners_[size_t(rank)][size_t(op)]; }

private:
  std::vector<std::vector<std::vector<int>>> preds_, succs_;
  std::vector<std::vector<std::vector<OpRef>>> partners_;
};

} // namespace cpsim
