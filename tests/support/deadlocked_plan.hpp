// A hand-built two-rank plan that can never run, shared by the engines' deadlock tests so that both
// engines are held to the same error on the same plan.
#pragma once

#include "cpsim/model/schedule.hpp"

namespace cpsim::test {

/** Both ranks post their receive first and their send behind it on the same stream: no send can start. */
inline Schedule deadlocked_two_rank_plan() {
  Schedule t;
  t.scheme = "hand";
  t.world = 2;
  t.streams = {{"compute", StreamKind::COMPUTE}, {"comm", StreamKind::COMM}};
  t.placement = {0, 1};
  for (int r = 0; r < 2; ++r) {
    RankProgram p;
    p.rank = r;
    Op recv;
    recv.id = 0;
    recv.kind = OpKind::RECV;
    recv.stream = 1;
    recv.peer = 1 - r;
    recv.tag = 1 - r;
    recv.bytes = 100;
    recv.label = "first recv";
    Op send = recv;
    send.id = 1;
    send.kind = OpKind::SEND;
    send.tag = r;
    send.label = "blocked send";
    p.ops = {recv, send};
    t.ranks.push_back(p);
  }
  validate_schedule(t);
  return t;
}

} // namespace cpsim::test
