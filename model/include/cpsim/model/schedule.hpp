// The schedule IR, the spine of cpsim: for every rank an ordered list of ops on named streams with
// explicit dependencies. Generators produce it once; the analytic engine, the discrete-event engine
// and the real-GPU backend all execute this same object and never re-derive a schedule.
//
// Semantics every executor follows:
//  - ops of one stream run in list order; an op also waits for every op id in `deps` (same rank,
//    always an earlier id, so list order is a topological order);
//  - consecutive ops of one stream with the same `group` (>= 0) are posted together, like one
//    ncclGroupStart/End: they start together and the stream moves on when all have finished;
//  - a SEND on rank a to peer b with tag t pairs with the RECV on rank b from peer a with tag t;
//  - a COLLECTIVE pairs with the collectives of the same tag on every rank of its group;
//  - a SEND/RECV with `regions` moves exactly those parts of its buffers, in order, packed
//    [plane][row][head][element] per region (TE p2p's [KV; dKV], DSV's per-peer head sets, the token
//    blocks of CQS and DCP); without regions it moves the first `bytes` bytes of its one buffer.
//
// Token sets: a TokenRange is {begin + i*stride < end}; stride is 1 (contiguous) unless a layout
// interleaves tokens (stripe: rank r holds r, r+W, r+2W, ...). An attention segment with strided
// q or k means the kernel runs on the packed tensors of exactly those positions, in increasing
// order, and the mask is applied to the original positions (for stripe, causal within packed
// indices when the key offset is <= the query offset, strictly lower otherwise). Buffer token
// slices use the same form to say which positions a buffer holds and in what order. JSON writes
// the stride only when it is not 1, so contiguous plans are unchanged.
#pragma once

#include "cpsim/model/mask_geometry.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim {

enum class OpKind { ATTENTION, MERGE, SEND, RECV, COLLECTIVE, COMPUTE };
// COMPUTE ops: kernels beside attention that a sparse schedule must pay for (schedules.md 6.2, 8).
enum class ComputeKind {
  GATHER,     // copy scattered K/V rows (micro-tiles) into dense tiles before the kernel (PIT SRead)
  SCATTER,    // add gathered dK/dV rows back to their positions after the backward (PIT SWrite)
  LOWRANK_QK, // the sparsity predictor's rank-r estimate Q_lr K_lr^T (DSV), on CUDA cores
  TOPK,       // top-k selection of critical keys from the estimate, writing int32 indices (DSV)
  COPY        // rows of the read buffers into the written buffers, matched by token and head, a row held by several
              // read buffers from the first (CQS, DCP: resident blocks into the block buffer a launch reads)
};
enum class Direction { FORWARD, BACKWARD };
enum class CollectiveKind { ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL, ALL_REDUCE };
enum class StreamKind { COMPUTE, COMM };
enum class PassKind { FWD, FWD_BWD };

std::string to_string(OpKind k);
std::string to_string(Direction d);
std::string to_string(CollectiveKind k);
std::string to_string(PassKind p);
std::string to_string(ComputeKind k);

/** One rectangle of attention work: queries q x keys k of one sequence (positions in that sequence,
 *  either side possibly strided). */
struct AttnSegment {
  int seq = 0;
  TokenRange q;
  TokenRange k;
  bool operator==(const AttnSegment&) const = default;
};

/** A token range of one sequence (possibly strided), used to say what a buffer holds. */
struct TokenSlice {
  int seq = 0;
  TokenRange range;
  bool operator==(const TokenSlice&) const = default;
};

/**
 * Part of a buffer that a SEND reads or a RECV writes: planes [plane_begin, plane_end) (K, V of K-then-V
 * buffers) x the rows holding `tokens` x `heads`. Empty `tokens` or `heads` stand for all of the buffer's;
 * plane_end -1 for through its last plane.
 */
struct BufferRegion {
  std::string buffer;
  std::vector<TokenSlice> tokens;
  std::vector<int> heads;
  int plane_begin = 0;
  int plane_end = -1;
  bool operator==(const BufferRegion&) const = default;
};

struct Op {
  int id = -1;
  OpKind kind = OpKind::ATTENTION;
  int stream = 0;
  std::vector<int> deps;
  int group = -1;
  std::string label;
  std::vector<std::string> reads;  // buffer names
  std::vector<std::string> writes; // buffer names

  // ATTENTION: one kernel launch over all segments (varlen), for query heads [head_begin, head_end).
  Direction dir = Direction::FORWARD;
  int head_begin = 0;
  int head_end = 0;
  std::vector<AttnSegment> segments;
  int64_t cells = 0;   // visible cells per head, summed over segments
  TileCount tiles;     // kernel tiles per head, summed over segments
  // Per-head masks (DSV): heads see different layouts, so `cells` and `tiles` are instead summed
  // over the op's heads and `head_summed` is set. `head_ids` lists the query heads when they are
  // not the range [head_begin, head_end) (sparsity-aware head placement); head_begin/head_end then
  // bound them.
  bool head_summed = false;
  std::vector<int> head_ids;

  // MERGE: `rows` query rows x heads [head_begin, head_end) combining `inputs` partials
  // (forward: LSE merge; backward: gradient accumulation of `bytes` fp32 bytes).
  int64_t rows = 0;
  int inputs = 0;

  // SEND / RECV
  int peer = -1;
  int tag = -1;
  int64_t bytes = 0; // SEND/RECV: message bytes; COLLECTIVE: see below; MERGE(backward): bytes added
  std::vector<BufferRegion> regions; // SEND/RECV: what the message carries, in order (see the top of this file)

  // COLLECTIVE: ranks of the group in ring order; `bytes` is the per-rank send buffer for
  // ALL_TO_ALL (of which (n-1)/n leaves the rank), the per-rank contribution for ALL_GATHER,
  // the per-rank output shard for REDUCE_SCATTER, the whole buffer for ALL_REDUCE.
  CollectiveKind coll = CollectiveKind::ALL_TO_ALL;
  std::vector<int> coll_group;
  // COLLECTIVE over a K-then-V buffer (kv, dkv, dkv_acc): 0 moves the K plane only, 1 the V plane only, -1 both.
  // The K and V all-to-alls of USP and LoongTrain are two ops on one buffer; each moves its plane.
  int plane = -1;

  // COMPUTE: `flops` arithmetic (or compare) operations on CUDA cores and `bytes` moved through HBM.
  ComputeKind compute = ComputeKind::GATHER;
  int64_t flops = 0;
  // GATHER, SCATTER: micro-tile width in tokens, along query rows when gather_rows (else key columns).
  // LOWRANK_QK scores and TOPK: queries per proxy query (DSV's query group).
  int64_t granularity = 0;
  bool gather_rows = false;
  // LOWRANK_QK scores and TOPK: keys kept per proxy query, one entry per head of the query buffer, in its order.
  std::vector<int64_t> keep;

  int heads() const { return head_ids.empty() ? head_end - head_begin : static_cast<int>(head_ids.size()); }
  /** The query heads of an attention or merge op, in order. */
  std::vector<int> head_list() const;
  /** Visible cells and kernel tiles over all of the op's heads (attention). */
  int64_t cells_all_heads() const { return head_summed ? cells : cells * heads(); }
  TileCount tiles_all_heads() const {
    return head_summed ? tiles : TileCount{tiles.full * heads(), tiles.partial * heads()};
  }
};

/** A named allocation alive from op `alloc_op` to op `free_op` (inclusive; -1: whole program). */
struct Buffer {
  std::string name;
  std::string tensor; // q, k, v, kv, o, lse, o_acc, lse_acc, do, dq, dk, dv, dkv, staging, q_lr, k_lr, index
  int64_t bytes = 0;
  int head_begin = 0;
  int head_end = 0;
  std::vector<TokenSlice> tokens;
  int alloc_op = -1;
  int free_op = -1;
  // The heads held, in order, when they are not [head_begin, head_end) (DSV's sparsity-aware placement);
  // head_begin/head_end then bound them.
  std::vector<int> head_ids;
  // Element type ("bf16", "fp32", "fp64", "int32"); empty: bf16 or fp32, as bytes per element say. With a
  // dtype, the elements per row and head follow from the bytes (the predictor's d_lr-wide q_lr, k_lr).
  std::string dtype;
  int heads() const { return head_ids.empty() ? head_end - head_begin : static_cast<int>(head_ids.size()); }
  std::vector<int> head_list() const;
  int64_t rows() const;
};

/** K and V (kv, dkv, dkv_acc) are two planes of one buffer: K rows, then V rows. */
int tensor_planes(const std::string& tensor);
/** Bytes of one (row, head, plane) of a buffer: its bytes over rows x heads x planes; -1 if that does not divide. */
int64_t buffer_unit_bytes(const Buffer& b);
/** Bytes a region of `b` moves (-1 when the buffer's unit is undefined). */
int64_t region_bytes(const Buffer& b, const BufferRegion& r);

struct RankProgram {
  int rank = 0;
  std::vector<Op> ops;
  std::vector<Buffer> buffers;
};

struct Stream {
  std::string name;
  StreamKind kind = StreamKind::COMPUTE;
};

struct Schedule {
  std::string scheme;
  PassKind pass = PassKind::FWD;
  int world = 0;
  int64_t tile_m = 128;
  int64_t tile_n = 128;
  std::vector<Stream> streams;
  std::vector<int> placement; // logical rank -> GPU index in the cluster (replica 0)
  // The W-rank program runs on `replicas` disjoint GPU sets at once (data-parallel CP groups):
  // replica k places rank r on GPU placement[r] + k * replica_stride. Engines with contention
  // must model the replicas' flows; contention-free engines may simulate one replica.
  int replicas = 1;
  int replica_stride = 0;
  std::vector<RankProgram> ranks;
};

/**
 * Checks the structural rules above (ids, streams, deps, buffer references, SEND/RECV pairing
 * with equal bytes, collective agreement). Throws UserError naming the rank, op and rule, since
 * a plan may come from a user's file.
 */
void validate_schedule(const Schedule& s);

} // namespace cpsim
