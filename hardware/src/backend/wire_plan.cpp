// Postings in issue order and their static pairing (see the header). The collective spans here are the
// ones issue_collective packs and posts: one span per peer, the sends first, then the receives.
#include "cpsim/hardware/backend/wire_plan.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <string>
#include <tuple>

namespace cpsim::backend {

int64_t piece_plane_bytes(const RankExecPlan& rp, const CollectivePlan& cp, const CollectivePiece& pc) {
  const BufferPlacement &src = rp.buffers[size_t(cp.src)], &dst = rp.buffers[size_t(cp.dst)];
  const int64_t head_elems = src.heads ? src.width / src.heads : 0;
  return pc.block.rows * pc.heads * head_elems * dst.elem_bytes; // the wire carries the destination's type
}

namespace {

std::string where(const Schedule& s, int rank, int op) {
  const Op& o = s.ranks[size_t(rank)].ops[size_t(op)];
  return "rank " + std::to_string(rank) + " op " + std::to_string(op) + " ('" + o.label + "')";
}

/** One part per peer for the sends, then for the receives: a peer's pieces lie back to back in staging. */
void collective_parts(const RankExecPlan& rp, int op, const CollectivePlan& cp, WirePosting& post) {
  const int64_t planes = cp.plane_end - cp.plane_begin;
  auto spans = [&](const std::vector<CollectivePiece>& pieces, int64_t off, bool send) {
    std::map<int, WirePart> by_peer;
    int last_peer = -1;
    for (const CollectivePiece& pc : pieces) {
      auto [it, fresh] = by_peer.try_emplace(pc.peer);
      CPSIM_ASSERT(fresh || pc.peer == last_peer, "collective pieces of one peer must be consecutive");
      last_peer = pc.peer;
      if (fresh)
        it->second = {send, pc.peer, rp.arena_bytes + cp.staging_offset_bytes + off, 0};
      const int64_t b = piece_plane_bytes(rp, cp, pc) * planes;
      it->second.bytes += b;
      off += b;
    }
    for (auto& [peer, part] : by_peer) {
      part.op = op;
      post.parts.push_back(part);
    }
  };
  spans(cp.sends, 0, true);
  spans(cp.recvs, cp.send_bytes, false); // receives land after the packed sends, as issue_collective unpacks them
}

/** Where a send's or receive's bytes lie in the rank's memory (offsets from the arena's start), the only place that
 *  says so for both transports: a message of buffer regions (exec plan `messages`) at its place in its buffer when
 *  direct, else in staging after the arena where pack_messages / unpack_messages move it; any other send or receive
 *  is its one buffer, whole. */
struct Region {
  int64_t offset_bytes = 0;
  int64_t bytes = 0; // what the region holds: the message must fit
  std::string name;
};
Region p2p_region(const RankExecPlan& rp, const Op& op) {
  if (auto it = rp.messages.find(op.id); it != rp.messages.end()) {
    const MessagePlan& m = it->second;
    if (!m.direct)
      return {rp.arena_bytes + m.staging_offset_bytes, op.bytes, "the packed message of op " + std::to_string(op.id)};
    const BufferPlacement& b = rp.buffers.at(size_t(m.buffer));
    return {b.offset_bytes + m.offset_bytes, b.bytes - m.offset_bytes,
            "buffer '" + b.name + "' from byte " + std::to_string(m.offset_bytes)};
  }
  const BufferPlacement& b = rp.buffer(op.kind == OpKind::SEND ? op.reads.at(0) : op.writes.at(0));
  return {b.offset_bytes, b.bytes, "buffer '" + b.name + "'"};
}

RankWire postings_of(const Schedule& s, const RankExecPlan& rp) {
  const RankProgram& p = s.ranks[size_t(rp.rank)];
  RankWire rw;
  for (size_t i = 0; i < rp.slots.size(); ++i) {
    const Slot& sl = rp.slots[i];
    const Op& first = p.ops[size_t(sl.ops[0])];
    if (first.kind == OpKind::SEND || first.kind == OpKind::RECV) {
      WirePosting post{int(i), sl.stream, first.id, rp.comm_of_op[size_t(first.id)], {}};
      for (int id : sl.ops) {
        const Op& op = p.ops[size_t(id)];
        if (op.kind != OpKind::SEND && op.kind != OpKind::RECV)
          throw UserError(where(s, rp.rank, id) + " is grouped with the send/recv op " + std::to_string(first.id) +
                          ", but is neither: a group is posted either as sends and receives or as other ops");
        if (rp.comm_of_op[size_t(id)] != post.comm)
          throw UserError(where(s, rp.rank, id) + " is grouped with op " + std::to_string(first.id) +
                          " but travels on another stream's communicator");
        const Region at = p2p_region(rp, op);
        if (op.bytes > at.bytes)
          throw UserError(where(s, rp.rank, id) + ": moves " + std::to_string(op.bytes) + " bytes, but " + at.name + " holds " +
                          std::to_string(at.bytes));
        WirePart part{op.kind == OpKind::SEND, op.peer, at.offset_bytes, op.bytes};
        part.op = id;
        post.parts.push_back(part);
        rw.posting_of_op[id] = int(rw.postings.size());
      }
      rw.postings.push_back(std::move(post));
      continue;
    }
    for (int id : sl.ops) {
      if (p.ops[size_t(id)].kind != OpKind::COLLECTIVE)
        continue;
      WirePosting post{int(i), sl.stream, id, rp.comm_of_op[size_t(id)], {}};
      collective_parts(rp, id, rp.collectives.at(id), post);
      rw.posting_of_op[id] = int(rw.postings.size());
      rw.postings.push_back(std::move(post));
    }
  }
  for (auto& post : rw.postings)
    for (auto& part : post.parts)
      part.flag = rw.flags++;
  return rw;
}

} // namespace

WirePlan make_wire_plan(const Schedule& s, const ExecPlan& plan) {
  WirePlan w;
  for (const RankExecPlan& rp : plan.ranks)
    w.ranks.push_back(postings_of(s, rp));
  // (communicator, from, to) -> the parts in posting order, on the sending and on the receiving side
  using Key = std::tuple<int, int, int>;
  std::map<Key, std::vector<std::pair<int, WirePart*>>> sends, recvs; // (owning rank, part)
  for (size_t r = 0; r < w.ranks.size(); ++r)
    for (auto& post : w.ranks[r].postings)
      for (auto& part : post.parts) {
        if (part.peer < 0 || part.peer >= int(w.ranks.size()) || part.peer == int(r))
          throw UserError(where(s, int(r), part.op) + ": peer " + std::to_string(part.peer) + " is not another rank of the plan");
        if (part.send)
          sends[{post.comm, int(r), part.peer}].push_back({int(r), &part});
        else
          recvs[{post.comm, part.peer, int(r)}].push_back({int(r), &part});
      }
  std::map<Key, bool> keys;
  for (const auto& [k, v] : sends)
    keys[k] = true;
  for (const auto& [k, v] : recvs)
    keys[k] = true;
  for (const auto& [key, unused] : keys) {
    const auto& [comm, from, to] = key;
    const auto& snd = sends[key];
    const auto& rcv = recvs[key];
    const std::string on = " on stream '" + s.streams[size_t(plan.comms[size_t(comm)].stream)].name + "'";
    for (size_t i = 0; i < std::max(snd.size(), rcv.size()); ++i) {
      if (i >= rcv.size())
        throw UserError(where(s, from, snd[i].second->op) + ": its send #" + std::to_string(i + 1) + " to rank " +
                        std::to_string(to) + on + " has no matching receive on rank " + std::to_string(to));
      if (i >= snd.size())
        throw UserError(where(s, to, rcv[i].second->op) + ": its receive #" + std::to_string(i + 1) + " from rank " +
                        std::to_string(from) + on + " has no matching send on rank " + std::to_string(from));
      WirePart &sp = *snd[i].second, &rp = *rcv[i].second;
      if (sp.bytes != rp.bytes)
        throw UserError(where(s, from, sp.op) + " sends " + std::to_string(sp.bytes) + " bytes to rank " + std::to_string(to) +
                        on + ", but the matching receive, " + where(s, to, rp.op) + ", takes " + std::to_string(rp.bytes));
      sp.peer_flag = rp.flag;
      sp.peer_offset_bytes = rp.offset_bytes;
      sp.peer_op = rp.op;
      rp.peer_flag = sp.flag;
      rp.peer_offset_bytes = sp.offset_bytes;
      rp.peer_op = sp.op;
    }
  }
  return w;
}

} // namespace cpsim::backend
