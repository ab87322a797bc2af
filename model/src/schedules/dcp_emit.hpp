// What the forward (dcp.cpp) and backward (dcp_backward.cpp) emitters of DCP's plan share: the
// per-message token slices and bytes, the KV heads a head block reads, and the message tags.
#pragma once

#include "cpsim/model/dcp_plan.hpp"
#include "cpsim/model/schedule_builder.hpp"

#include <utility>
#include <vector>

namespace cpsim::dcp {

constexpr int kTagOut = p2p_tag(1, 0);
inline int tag_q(int stage) { return 2 * stage; }
inline int tag_kv(int stage) { return 2 * stage + 1; }

/** What one message carries: token slices and bytes. */
struct Message {
  std::vector<TokenSlice> slices;
  int64_t bytes = 0;
};

inline void add_slice(std::vector<TokenSlice>& v, const DcpDataBlock& b) {
  TokenSlice t{b.seq, {b.begin, b.end}};
  for (const auto& u : v)
    if (u == t)
      return;
  v.push_back(t);
}

/** KV heads [first, second) read by head block h of `hb` query heads, `per_kv` query heads per KV head. */
inline std::pair<int, int> kv_heads_of(int h, int hb, int per_kv) {
  return {h * hb / per_kv, ((h + 1) * hb - 1) / per_kv + 1};
}

/** Appends the backward plan after the forward ops of every rank (same placement and stages). */
void emit_backward(ScheduleBuilder& b, const Scenario& sc, const DcpPlan& plan, int comp, int comm);

} // namespace cpsim::dcp
