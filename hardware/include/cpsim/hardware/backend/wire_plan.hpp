// What every rank puts on the wire, posting by posting, and which part of which peer's posting each
// send and receive meets. Both transports replay these postings: NCCL matches them itself (in posting
// order per communicator and pair), the one-GPU loopback transport needs the pairing up front, since a
// receiver there copies straight out of the sender's memory and must know the sender's address. Pure
// CPU, built from the exec plan alone, so the pairing is unit-tested without a GPU.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"

#include <cstdint>
#include <map>
#include <vector>

namespace cpsim::backend {

/** One send or receive of a posting: bytes of this rank's memory (arena, then collective staging) and its match. */
struct WirePart {
  bool send = false;
  int peer = -1;              // world rank
  int64_t offset_bytes = 0;   // from the start of this rank's memory (the arena; staging follows it)
  int64_t bytes = 0;
  int op = -1;                // the send, recv or collective op the part belongs to
  int flag = -1;              // this rank's completion flag of the part (loopback): a receive waits on it for
                              // "the data is ready", a send for "the data has left"
  int peer_flag = -1;         // the matching part's flag on the peer
  int64_t peer_offset_bytes = 0; // where the matching part's bytes lie in the peer's memory
  int peer_op = -1;           // the op of the matching part on the peer
};

/** Sends and receives posted together on one stream (one ncclGroupStart/End). */
struct WirePosting {
  int slot = -1;
  int stream = -1; // the IR stream it is posted on
  int op = -1;   // a send/recv slot's first op, or the collective
  int comm = -1; // index into ExecPlan::comms
  // a send/recv slot: its ops in order; a collective: its sends, then its receives, each in peer order
  std::vector<WirePart> parts;
};

struct RankWire {
  std::vector<WirePosting> postings; // in issue order
  std::map<int, int> posting_of_op;  // every send, recv and collective op -> its posting
  int flags = 0;                     // completion flags of this rank (one per part)
};

struct WirePlan {
  std::vector<RankWire> ranks;
};

/**
 * The postings of every rank and the static pairing: the k-th send from rank a to rank b on a communicator meets
 * the k-th receive of b from a on it, as NCCL pairs them. Throws UserError naming rank, op and peer when a send
 * has no receive (or the reverse) or the two sides disagree on the bytes.
 */
WirePlan make_wire_plan(const Schedule& s, const ExecPlan& plan);

/** Bytes of one plane of a collective piece packed in staging and on the wire (the destination's element type);
 *  a packed piece holds its moving planes one after the other. */
int64_t piece_plane_bytes(const RankExecPlan& rp, const CollectivePlan& cp, const CollectivePiece& pc);

} // namespace cpsim::backend
