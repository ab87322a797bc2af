// The CPU half of the real-GPU backend: how one validated schedule maps onto a process's CUDA
// streams, events, NCCL communicators and device memory. Everything here is a pure function of the
// IR (never a re-derived schedule), so it is unit-tested without a GPU; the GPU half only replays it.
#pragma once

#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cpsim::backend {

/** A run of buffer rows that is contiguous in the source and evenly strided in the destination (or vice versa). */
struct RowBlock {
  int64_t src_row = 0;
  int64_t src_step = 1;
  int64_t dst_row = 0;
  int64_t dst_step = 1;
  int64_t rows = 0;
};

/** One IR buffer in the rank's arena. Rows are tokens in slice order; a row holds heads x head_dim
 *  elements, once per plane (kv-family buffers hold K rows then V rows). */
struct BufferPlacement {
  std::string name;
  std::string tensor;
  int64_t offset_bytes = 0;
  int64_t bytes = 0;
  int64_t rows = 0;
  int head_begin = 0;
  int heads = 0;
  int planes = 1;
  int elem_bytes = 2; // inferred from bytes: 2 (bf16) or 4 (fp32)
  bool pinned = false; // never shares memory (inputs, results, whole-program buffers)
  int64_t width = 0; // elements per row and plane: heads x head_dim, or heads for lse
  std::vector<TokenSlice> tokens;
  int64_t row_bytes() const { return width * elem_bytes; }
  int64_t plane_bytes() const { return rows * row_bytes(); }
};

/** A query x key rectangle of an attention op, in rows of the q and kv buffers plus original positions for the mask. */
struct SegmentRows {
  int seq = 0;
  int64_t q_row = 0;
  int64_t k_row = 0;
  TokenRange q;
  TokenRange k;
};

/** One posting on one stream: a lone op, or a group of ops posted together (one ncclGroupStart/End). */
struct Slot {
  int stream = 0;
  std::vector<int> ops;
  std::vector<int> wait_slots; // slots of other streams that must finish first (CUDA events)
  bool record_event = false;   // some other stream waits for this slot
};

/** One NCCL communicator: a (stream, ordered group) pair, so that NCCL never orders operations of two streams. */
struct CommSpec {
  int stream = 0;
  std::vector<int> ranks; // comm rank i is world rank ranks[i]
  bool operator==(const CommSpec&) const = default;
};

/** A slice of one buffer moved to or from one peer by a collective (packed in staging, ordered identically on both sides). */
struct CollectivePiece {
  int peer = 0; // world rank
  RowBlock block;
  int src_head_offset = 0; // first head of the piece, relative to the source buffer's head_begin
  int dst_head_offset = 0;
  int heads = 0;
};

struct CollectivePlan {
  int src = -1; // buffer index
  int dst = -1;
  int plane_begin = 0; // planes [plane_begin, plane_end) of K-then-V buffers move (the op's `plane`, or all)
  int plane_end = 1;
  bool reduce = false; // REDUCE_SCATTER: the own piece is copied, every received piece is added to it
  std::vector<CollectivePiece> sends;  // this rank's source rows for each peer (peer order, then piece order)
  std::vector<CollectivePiece> recvs;  // pieces written into the destination from each peer
  std::vector<CollectivePiece> local;  // self-to-self copies
  int64_t staging_offset_bytes = 0;
  int64_t send_bytes = 0;
  int64_t recv_bytes = 0;
};

/** One addition of a merge that accumulates in place: rows of `src` added to the rows of `dst` holding the same tokens. */
struct MergeAdd {
  int src = -1;
  int dst = -1;
  RowBlock block;
};

struct RankExecPlan {
  int rank = 0;
  std::vector<Slot> slots; // in issue order (a topological order of the slot graph)
  std::vector<int> slot_of_op;
  std::vector<BufferPlacement> buffers;
  std::map<std::string, int> buffer_index;
  std::vector<int> comm_of_op;                      // index into ExecPlan::comms for communication ops, else -1
  std::map<int, std::vector<SegmentRows>> segments; // attention op -> its rectangles in buffer rows
  std::map<int, CollectivePlan> collectives;        // collective op -> pieces
  std::map<std::string, int> results;               // o, lse, dq, dk, dv, dkv -> buffer index read back by --check
  // attention op -> buffers zeroed right before it, every repetition: accumulators (the op adds into them)
  // and dK/dV outputs, of which the kernels write only the key rows some query of the op sees while a later
  // merge adds the whole buffer (zigzag's backward step on the other rank's KV covers its first chunk only)
  std::map<int, std::vector<int>> zero_before;
  // backward merge op -> additions into a buffer it reads and writes (TE all-gather: dK[:kv_end] += the chunk's dK),
  // matched by token, since the partial covers only the keys its chunk sees
  std::map<int, std::vector<MergeAdd>> merge_adds;
  int64_t arena_bytes = 0;   // buffers, with reuse only where the IR orders the lifetimes
  int64_t staging_bytes = 0; // packing space of collectives, after the arena
  int64_t predicted_peak_bytes = 0;
  int64_t working_set_bytes = 0; // bytes of buffers some op reads or writes
  const BufferPlacement& buffer(const std::string& name) const { return buffers.at(size_t(buffer_index.at(name))); }
};

struct ExecPlan {
  std::vector<CommSpec> comms; // identical on every rank: all ranks create them in this order
  std::vector<RankExecPlan> ranks;
};

/** Throws UserError for ops the backend cannot execute or plans that would deadlock under NCCL's in-order matching. */
ExecPlan make_exec_plan(const Schedule& s, const Workload& w);

/** Positions of `a` (at buffer row a_row0) that `b` (at row b_row0) also holds; false if none. UserError if the strides cannot be expressed. */
bool intersect_rows(const TokenRange& a, int64_t a_row0, const TokenRange& b, int64_t b_row0, RowBlock& out);

/** Row of position `pos` of sequence `seq` in a buffer's slices, or -1. */
int64_t row_of(const std::vector<TokenSlice>& slices, int seq, int64_t pos);

} // namespace cpsim::backend
