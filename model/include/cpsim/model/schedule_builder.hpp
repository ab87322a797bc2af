// Helper every schedule generator uses to emit IR ops: it fills in ids, counts cells and tiles of
// attention ops from the mask, drops empty segments, and validates the finished schedule.
#pragma once

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

  /** Visible cells of the segments (per head), for generators that need to skip empty work. */
  int64_t cells_of(const std::vector<AttnSegment>& segs) const;

  /** Emits an attention op over the segments that hold visible cells; returns -1 if none do. */
  int attention(int rank, int stream, std::vector<int> deps, Direction dir, int head_begin, int head_end,
                const std::vector<AttnSegment>& segs, std::string label, std::vector<std::string> reads,
                std::vector<std::string> writes);
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
  const Scenario& sc_;
  const MaskGeometry& mask_;
  Schedule s_;
  std::vector<int> next_group_;
};

/** Deterministic tag for point-to-point channel `channel` at step `step` (unique per pair). */
constexpr int p2p_tag(int channel, int step) { return channel * 1000000 + step; }

} // namespace cpsim
