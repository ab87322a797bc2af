// Helper every schedule generator uses to emit IR ops: it fills in ids, counts cells and tiles of
// attention ops from the mask, drops empty segments, and validates the finished schedule.
#pragma once

#include "cpsim/model/micro_tiles.hpp"
#include "cpsim/model/scenario.hpp"
#include "cpsim/model/schedule.hpp"

#include <string>
#include <vector>

namespace cpsim {

class ScheduleBuilder {
public:
  ScheduleBuilder(const Scenario& sc, const MaskGeometry& mask, std::string scheme, int world);

  int add_stream(const std::string& name, StreamKind kind);
  Buffer& add_buffer(int rank, Buffer b);
  void set_free(int rank, const std::string& buffer, int op);
  void set_alloc(int rank, const std::string& buffer, int op);
  /** A buffer declared on `rank` (asserts that it exists). */
  const Buffer& buffer(int rank, const std::string& name) const;

  /** Visible cells of the segments (per head), for generators that need to skip empty work. */
  int64_t cells_of(const std::vector<AttnSegment>& segs) const;

  /** Emits an attention op over the segments that hold visible cells; returns -1 if none do. */
  int attention(int rank, int stream, std::vector<int> deps, Direction dir, int head_begin, int head_end,
                const std::vector<AttnSegment>& segs, std::string label, std::vector<std::string> reads,
                std::vector<std::string> writes);
  /** Attention over an explicit, possibly non-contiguous list of query heads (per-head masks). */
  int attention_on_heads(int rank, int stream, std::vector<int> deps, Direction dir, std::vector<int> heads,
                         const std::vector<AttnSegment>& segs, std::string label, std::vector<std::string> reads,
                         std::vector<std::string> writes);
  /**
   * Recounts attention op `op`'s tiles as the dense tiles left after gathering its key columns in
   * micro-tiles of `granularity` tokens (PIT; DSV's token-gathered KV). Returns the gather's
   * totals over the op's heads and segments (all heads, so the op becomes head_summed).
   */
  GatheredTiles gather_tiles(int rank, int op, int64_t granularity, GatherAxis axis = GatherAxis::KEYS);
  int compute(int rank, int stream, std::vector<int> deps, ComputeKind kind, int64_t flops, int64_t bytes,
              std::string label, std::vector<std::string> reads, std::vector<std::string> writes);
  /** Sets a compute op's cost once what it moves is known (a gather sized by the attention after it). */
  void set_compute_cost(int rank, int op, int64_t flops, int64_t bytes);
  /** What a GATHER or SCATTER op packs: micro-tiles of `granularity` tokens, along query rows or key columns. */
  void set_gather(int rank, int op, int64_t granularity, bool rows);
  /** A predictor op's proxy stride (queries per proxy) and keys kept per proxy, one entry per head of its query buffer. */
  void set_predictor(int rank, int op, int64_t query_group, std::vector<int64_t> keep);
  /** The parts of its buffers a send or receive moves; the op then reads (writes) exactly the regions' buffers. */
  void set_regions(int rank, int op, std::vector<BufferRegion> regions);
  /** A collective over a K-then-V buffer moves only plane 0 (K) or 1 (V); a no-op for op -1 (a one-rank group). */
  void set_plane(int rank, int op, int plane);
  void set_buffer_bytes(int rank, const std::string& buffer, int64_t bytes);
  int merge(int rank, int stream, std::vector<int> deps, Direction dir, int head_begin, int head_end, int64_t rows,
            int inputs, int64_t bytes, std::string label, std::vector<std::string> reads,
            std::vector<std::string> writes);
  int send(int rank, int stream, std::vector<int> deps, int peer, int64_t bytes, int tag, int group, std::string label,
           std::string buffer);
  int recv(int rank, int stream, std::vector<int> deps, int peer, int64_t bytes, int tag, int group, std::string label,
           std::string buffer);
  int collective(int rank, int stream, std::vector<int> deps, CollectiveKind kind, std::vector<int> group_ranks,
                 int64_t bytes, int tag, std::string label, std::vector<std::string> reads,
                 std::vector<std::string> writes);

  int next_group(int rank) { return next_group_[static_cast<size_t>(rank)]++; }
  int last_op(int rank) const { return static_cast<int>(s_.ranks[static_cast<size_t>(rank)].ops.size()) - 1; }
  const Op& op(int rank, int id) const { return s_.ranks[static_cast<size_t>(rank)].ops[static_cast<size_t>(id)]; }

  /** Validates and returns the schedule. */
  Schedule finish();

  const Scenario& scenario() const { return sc_; }

private:
  Op& push(int rank, Op op);
  Buffer& find_buffer(int rank, const std::string& buffer, const char* caller);
  int emit_attention(int rank, Op op, const std::vector<AttnSegment>& segs);
  const Scenario& sc_;
  const MaskGeometry& mask_;
  Schedule s_;
  std::vector<int> next_group_;
};

/** Deterministic tag for point-to-point channel `channel` at step `step` (unique per pair). */
constexpr int p2p_tag(int channel, int step) { return channel * 1000000 + step; }

} // namespace cpsim
