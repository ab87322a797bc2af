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
  std::vector<int> head_ids; // the heads of a row, in order (DSV places non-contiguous ones)
  int planes = 1;
  int elem_bytes = 2; // the IR's dtype, else inferred from bytes: 2 (bf16) or 4 (fp32)
  bool pinned = false; // never shares memory (inputs, results, whole-program buffers)
  int64_t head_width = 0; // elements per row, head and plane: head_dim, 1 for lse, or what a dtype'd buffer's bytes say
  int64_t width = 0; // elements per row and plane: heads x head_width
  std::vector<TokenSlice> tokens;
  int64_t row_bytes() const { return width * elem_bytes; }
  int64_t plane_bytes() const { return rows * row_bytes(); }
  /** Position of global head `h` in a row, or -1. */
  int head_pos(int h) const;
  bool contiguous_heads() const { return heads == 0 || head_ids.back() - head_ids.front() + 1 == heads; }
};

/** A query x key rectangle of an attention op, in rows of the q and kv buffers plus original positions for the mask. */
struct SegmentRows {
  int seq = 0;
  int64_t q_row = 0;
  int64_t k_row = 0;
  TokenRange q;
  TokenRange k;
};

/**
 * One kernel launch of an attention op: query heads [head_begin, head_end), whose rows are consecutive in every
 * q-side buffer and whose KV heads are consecutive in one k and one v buffer (DSV's head placement and per-group
 * gathered K/V give several launches). Rectangles are in rows of the q and k buffers; another buffer of the same
 * side may hold those rows shifted (TE p2p's half-size step outputs): row_offset[b] = its row minus the q (k) row.
 */
struct AttnLaunch {
  int head_begin = 0, head_end = 0;
  std::vector<SegmentRows> segments;
  int q = -1, k = -1, v = -1; // buffer indices; a K-then-V buffer is both k and v
  int k_plane = 0, v_plane = 0;
  std::map<int, int64_t> row_offset;
  int gather = -1; // PIT: the GATHER op whose packed K, V the launch reads (k, v, segments unused)
  int slot = 0;    // PIT: the gather's head slot (one per query head of a per-head mask, else 0)
};

/**
 * PIT's micro-tile gather (a GATHER op), per head slot and per fixed tile. Along key columns (the default): the key
 * micro-tiles holding a visible cell of each query tile, K then V. Along query rows: the query micro-tiles holding
 * a visible cell of each key tile, Q (and, for the backward, dO, O and the LSE). Packed rows follow one another,
 * slot-major. Slots are the query heads for per-head masks, else one for every head of the source.
 */
struct GatherLayout {
  int64_t granularity = 0;
  bool rows = false;        // gathers query rows per key tile (PIT's 'axis' = "rows")
  std::vector<int> src;     // gathered from: {kv} (columns: K and V planes), {q} or {q, do, o} (rows)
  int src_lse = -1;         // rows, backward: the LSE gathered with them
  int packed = -1;          // the bf16 staging packed into: one plane per source plane ([K][V], [Q] or [Q][dO][O])
  int packed_lse = -1;      // rows, backward: the fp32 LSE of the packed rows
  int index = -1;           // the int32 micro-tile index buffer
  std::vector<int> slot_heads; // query head of each slot (per-head masks), or {-1}: every head of the source
  int64_t row_elems = 0;       // elements of one packed row of a bf16 plane (one head, or every head of the source)
  struct Tile {
    int seq = 0;
    int64_t fixed_row = 0, fixed_pos = 0, fixed_n = 0; // the fixed tile: a query tile in q (columns), a key tile in kv (rows)
    int64_t packed_row = 0;                  // its first packed row
    int64_t index_entry = 0;                 // its first entry in the micro-tile index
    int64_t candidates = 0, first_candidate = 0; // micro-tiles inspected: ids first_candidate.. of its sequence
    TokenRange span;                         // the positions of the other side the rectangle covers (clips micro-tiles)
    std::vector<TokenRange> micro;           // gathered micro-tiles, in order
    std::vector<int64_t> src_row;            // row of each micro-tile's first token in the sources
  };
  std::vector<std::vector<Tile>> tiles; // [slot]
  int64_t packed_rows = 0, entries = 0, candidates = 0;
  bool builds_index = true; // the forward gather scans the flags and writes the index; the backward's reads it
  int row_heads = 1;        // heads in one packed row: 1 for per-head slots, else every head of the source
};

/** PIT's scatter (a SCATTER op): the gathered gradient rows of `src` (laid out as gather `gather` packed them) summed into
 *  their home rows of `dst` (dK, dV along columns; dQ along rows); home_row[slot][tile][micro-tile] is the first row in dst. */
struct ScatterPlan {
  int gather = -1;
  int src = -1, dst = -1;
  std::vector<std::vector<std::vector<int64_t>>> home_row;
};

/**
 * DSV's predictor ops: the rank-d_lr projections of q and k (PROJECT), a threshold per proxy query (SCORES: the
 * histogram bin of its k-th largest estimate) and the top-k selection (TOPK: the keys above it, int32 indices).
 */
struct PredictorPlan {
  enum Kind { PROJECT, SCORES, TOPK } kind = PROJECT;
  int q = -1, k = -1, q_lr = -1, k_lr = -1, threshold = -1, index = -1;
  int64_t rank_lr = 0, query_group = 0, proxies = 0;
  struct Seq {
    int64_t q_row = 0, queries = 0, proxies = 0, first_proxy = 0, k_row = 0, keys = 0;
  };
  std::vector<Seq> seqs;
  std::vector<int64_t> keep;         // per sequence, per head of q_lr
  std::vector<int64_t> index_offset; // first entry of each (sequence, head) in the index: proxies x keep entries
  std::vector<int> kv_pos;           // per head of q_lr: position of its KV head in k_lr
  // TOPK with sparse SCP: it also writes the counts and index triples the exchange sends (the tokens the K, V
  // receives name, per member, as (sequence, KV head, position); the owner serves the rows the IR names)
  int counts = -1, requests = -1;
  std::vector<int32_t> count_values, request_values;
};

/**
 * A forward MERGE other than the two-way merge into o_acc/lse_acc: TE p2p's LSE fold (lse_acc <- logaddexp with a
 * step's partial LSE, rows matched by token) and output correction (o += exp(L_step - L) O_step, then lse = L), the
 * n-way LSE merge into the output of CQS and DCP (kernels' merge_lse over runs of output rows whose partials
 * are the same buffers at consecutive rows; the op merges the rows with exactly `inputs` partials), and PIT's
 * scatter-merge along query rows (PACKED: every packed partial row merged into the output row it was gathered from).
 */
struct ForwardMerge {
  enum Kind { LSE_FOLD, OUT_CORRECTION, NWAY, PACKED } kind = NWAY;
  int gather = -1;              // PACKED: the forward gather that laid out the partials (part_o, part_lse)
  std::vector<std::vector<std::vector<int64_t>>> home_row; // PACKED: [slot][tile][micro-tile] first output row
  int acc = -1;                 // LSE_FOLD, OUT_CORRECTION: the running LSE
  int part_o = -1, part_lse = -1; // LSE_FOLD (lse only), OUT_CORRECTION: the step's partial; PACKED: the packed partials
  int out = -1, lse_out = -1;   // OUT_CORRECTION, NWAY: the output (lse_out: set from acc / merged)
  bool first = false;           // the first fold into acc (filled with -inf first) or correction into out (zeroed first)
  std::vector<RowBlock> blocks; // LSE_FOLD, OUT_CORRECTION: partial rows -> acc (and out) rows
  struct Input {
    int o = -1, lse = -1;
    int64_t row = 0; // the run's first row in both
  };
  struct Run {
    int64_t row = 0, rows = 0; // output rows
    std::vector<Input> inputs;
  };
  std::vector<Run> runs; // NWAY
};

/** Rows x a run of heads of one plane of one buffer, at msg_offset_bytes of a packed message (rows msg_pitch_bytes apart). */
struct MessagePiece {
  int buffer = -1;
  int plane = 0;
  int64_t row = 0, step = 1, rows = 0;
  int head_pos = 0, heads = 0;
  int64_t msg_offset_bytes = 0, msg_pitch_bytes = 0;
};

/** How a SEND or RECV with regions finds its bytes: in place when they are one range of one buffer, else packed through staging. */
struct MessagePlan {
  bool direct = false;
  int buffer = -1;           // direct: the buffer, and where in it the message starts
  int64_t offset_bytes = 0;
  std::vector<MessagePiece> pieces;
  int64_t staging_offset_bytes = 0; // packed: after the arena, like the collectives' staging
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
  // the piece lands on destination cells an earlier piece wrote (local pieces first, then received ones in order):
  // a gradient of a replicated head (Ulysses with fewer KV heads than ranks), summed like autograd sums repeats
  bool add = false;
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
  int src_head = 0, dst_head = 0, heads = 0; // a run of heads both hold side by side (positions in each row)
};

struct RankExecPlan {
  int rank = 0;
  std::vector<Slot> slots; // in issue order (a topological order of the slot graph)
  std::vector<int> slot_of_op;
  std::vector<BufferPlacement> buffers;
  std::map<std::string, int> buffer_index;
  std::vector<int> comm_of_op;                      // index into ExecPlan::comms for communication ops, else -1
  std::map<int, std::vector<AttnLaunch>> launches; // attention op -> its kernel launches
  std::map<int, GatherLayout> gathers;             // GATHER op -> what it packs (the attention after it reads that)
  std::map<int, ScatterPlan> scatters;             // SCATTER op -> where its gathered gradients go
  std::map<int, MessagePlan> messages;             // SEND/RECV op with regions -> where its bytes are
  std::map<int, PredictorPlan> predictors;         // LOWRANK_QK and TOPK ops
  std::map<int, ForwardMerge> forward_merges;      // forward MERGE ops that are not two-way into o_acc/lse_acc
  std::map<int, CollectivePlan> collectives;        // collective op -> pieces
  std::map<std::string, int> results;               // o, lse, dq, dk, dv, dkv -> buffer index read back by --check
  // attention op -> buffers zeroed right before it, every repetition: accumulators (the op adds into them)
  // and dK/dV outputs, of which the kernels write only the key rows some query of the op sees while a later
  // merge adds the whole buffer (zigzag's backward step on the other rank's KV covers its first chunk only)
  std::map<int, std::vector<int>> zero_before;
  // forward attention op -> written buffers with rows no launch covers: set to "no keys" (o 0, lse -inf) first,
  // since the merge that follows reads every row (where several forward attention ops write one buffer before it is
  // read, the first of them, and only when their launches together leave rows over)
  std::map<int, std::vector<int>> prefill;
  // backward merge op -> additions into a buffer it reads and writes (TE all-gather: dK[:kv_end] += the chunk's dK),
  // matched by token, since the partial covers only the keys its chunk sees
  std::map<int, std::vector<MergeAdd>> merge_adds;
  // COPY op -> the rows x heads it copies from a read buffer into a written one of the same tensor, matched by token
  std::map<int, std::vector<MergeAdd>> copies;
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
