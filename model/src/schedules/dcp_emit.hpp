// What the forward (dcp.cpp) and backward (dcp_backward.cpp) emitters of DCP's plan share: the
// per-message token slices and bytes, the KV heads a head block reads, and the message tags.
#pragma once

#include "cpsim/model/dcp_plan.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_builder.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace cpsim::dcp {

constexpr int kTagOut = p2p_tag(1, 0);
inline int tag_q(int stage) { return 2 * stage; }
inline int tag_kv(int stage) { return 2 * stage + 1; }

struct StageTags {
  int (*q)(int stage);
  int (*kv)(int stage);
};

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

/**
 * The first stage in which each (dst, block, head block | first KV head) is needed, built from one
 * read per work block and looked up per work block while emitting. (key, stage) is packed into one
 * integer that sorts like the pair: plans of 10^5 work blocks sort and search these much faster than
 * they fill and search a std::map.
 */
class FirstStages {
 public:
  using Key = std::tuple<int, int, int>;

  FirstStages() = default;
  /** Keys' blocks lie in [0, blocks), their head keys in [0, head_keys). */
  FirstStages(int blocks, int head_keys) : blocks_(blocks), head_keys_(head_keys) {}

  /** A read of `k` in `stage`; finish() once after the last. */
  void add(const Key& k, int stage) { packed_.push_back(pack(k) * kStageSlots + stage); }
  /** Keeps the earliest stage of every key. */
  void finish() {
    std::sort(packed_.begin(), packed_.end());
    packed_.erase(std::unique(packed_.begin(), packed_.end(),
                              [](int64_t a, int64_t b) { return a / kStageSlots == b / kStageSlots; }),
                  packed_.end());
  }
  int at(const Key& k) const {
    const int64_t key = pack(k);
    auto it = std::lower_bound(packed_.begin(), packed_.end(), key * kStageSlots);
    CPSIM_ASSERT(it != packed_.end() && *it / kStageSlots == key, "a remote DCP input was never fetched");
    return int(*it % kStageSlots);
  }
  /** (key, first stage), keys ascending. */
  std::vector<std::pair<Key, int>> entries() const {
    std::vector<std::pair<Key, int>> out;
    out.reserve(packed_.size());
    for (int64_t x : packed_) {
      const int64_t key = x / kStageSlots;
      out.push_back({{int(key / head_keys_ / blocks_), int(key / head_keys_ % blocks_), int(key % head_keys_)},
                     int(x % kStageSlots)});
    }
    return out;
  }

 private:
  static constexpr int64_t kStageSlots = kDcpMaxStages + 1;
  int64_t pack(const Key& k) const {
    return (int64_t(std::get<0>(k)) * blocks_ + std::get<1>(k)) * head_keys_ + std::get<2>(k);
  }
  int blocks_ = 0, head_keys_ = 0;
  std::vector<int64_t> packed_; // (key, first stage), ascending, one per key once finished
};

/** The remote inputs of a pass: first stage of each (dst, block, head key) and the messages they make. */
struct Fetches {
  FirstStages q_first, kv_first;
  std::map<std::tuple<int, int, int>, Message> q_msgs, kv_msgs; // (stage, src, dst) -> message
};

/**
 * Each remote block a device reads is fetched once, by the first stage that needs it; Q-side blocks
 * (per head block) weigh `q_bytes_per_token`, KV blocks (per KV head range) `kv_bytes_per_token`.
 */
inline Fetches plan_fetches(const DcpPlan& plan, int per_kv, int64_t q_bytes_per_token, int64_t kv_bytes_per_token) {
  const int blocks = int(plan.blocks.size());
  const int kv_heads = kv_heads_of(plan.head_blocks - 1, plan.head_block, per_kv).second; // the last head block's end
  Fetches f{FirstStages(blocks, plan.head_blocks), FirstStages(blocks, kv_heads), {}, {}};
  for (const DcpWork& wk : plan.work) {
    if (plan.blocks[size_t(wk.q_block)].device != wk.device)
      f.q_first.add({wk.device, wk.q_block, wk.head_block}, wk.stage);
    if (plan.blocks[size_t(wk.kv_block)].device != wk.device)
      f.kv_first.add({wk.device, wk.kv_block, kv_heads_of(wk.head_block, plan.head_block, per_kv).first}, wk.stage);
  }
  f.q_first.finish();
  f.kv_first.finish();
  auto messages = [&](const FirstStages& firsts, int64_t per_token, std::map<std::tuple<int, int, int>, Message>& out) {
    for (const auto& [key, stage] : firsts.entries()) {
      const DcpDataBlock& b = plan.blocks[size_t(std::get<1>(key))];
      Message& m = out[{stage, b.device, std::get<0>(key)}];
      add_slice(m.slices, b);
      m.bytes += b.tokens() * per_token;
    }
  };
  messages(f.q_first, q_bytes_per_token, f.q_msgs);
  messages(f.kv_first, kv_bytes_per_token, f.kv_msgs);
  return f;
}

/** Each device's work blocks in (stage, head block) order, the order the launches are emitted in. */
inline std::vector<std::vector<const DcpWork*>> work_by_device(const DcpPlan& plan) {
  std::vector<std::vector<const DcpWork*>> out(static_cast<size_t>(plan.devices));
  for (const DcpWork& wk : plan.work)
    out[size_t(wk.device)].push_back(&wk);
  for (auto& v : out)
    std::stable_sort(v.begin(), v.end(), [](const DcpWork* a, const DcpWork* b) {
      return std::tie(a->stage, a->head_block) < std::tie(b->stage, b->head_block);
    });
  return out;
}

/**
 * What a rank's launch of (stage t, head block h) reads, as DCP's block tables would give it, but in buffers: the
 * kernels take one tensor per input, so the blocks of a launch sit in one pool buffer per tensor (q side: q, or q,
 * o, do, lse in the backward; and kv). A remote block lands, in the stage group that first needs it, in the pool of
 * that stage; resident blocks and blocks received for an earlier stage are copied in (a COPY op per pool). A pool
 * whose blocks are exactly the resident ones, none received, is the resident buffer itself.
 */
struct Pools {
  std::map<std::pair<int, int>, std::vector<std::string>> q; // (t, h) -> one buffer per q-side tensor
  std::map<std::pair<int, int>, std::string> kv;
  std::map<std::pair<int, int>, std::vector<int>> q_blocks, kv_blocks; // the launch's blocks, ascending
  std::map<std::pair<int, int>, int> copy;                            // (t, h) -> its COPY op, if any
  std::map<int, std::vector<int>> recv_ops;                            // stage -> receives
  std::map<std::string, int> first_write;                              // pool -> its first writer
};

/** The resident q-side tensors a pass reads and the bytes a token of one head (one row of hb heads) adds per tensor. */
struct QSide {
  std::vector<std::string> tensors;     // resident names = tensor names
  std::vector<int64_t> bytes_per_head;  // per tensor: bytes of one token of one head
};

/**
 * One NCCL group per stage 1..T on `comm` (each remote block once, in the first stage that needs it, Q side and K, V
 * as one message each per peer and stage), the pool buffers and their COPY ops on `comp`. `prefix` names the pools.
 */
Pools emit_pools(ScheduleBuilder& b, int r, int comp, int comm, const DcpPlan& plan, const std::vector<const DcpWork*>& work,
                 const Fetches& fx, const QSide& qs, const std::vector<int>& send_deps, StageTags tags,
                 const std::string& label, const std::string& prefix);

/** Appends the backward plan after the forward ops of every rank (same placement and stages). */
void emit_backward(ScheduleBuilder& b, const Scenario& sc, const DcpPlan& plan, int comp, int comm);

} // namespace cpsim::dcp
