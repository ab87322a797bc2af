// DCP's backward (schedules.md 5.5 step 5, convert_forward_to_backward): the forward's placement and
// stages are reused. A work block off its query block's owner needs that block's Q, O, dO and LSE
// (fetched once the owner's forward merge is final) and K, V of its key block; it produces partial
// dQ and dKV, accumulated in fp32 per device across stages and summed at the owners at the end.
#include "dcp_emit.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace cpsim::dcp {

namespace {
constexpr int kTagGrad = p2p_tag(3, 0);
int tag_bq(int stage) { return p2p_tag(2, 2 * stage); }
int tag_bkv(int stage) { return p2p_tag(2, 2 * stage + 1); }
} // namespace

void emit_backward(ScheduleBuilder& b, const Scenario& sc, const DcpPlan& plan, int comp, int comm) {
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  const int per_kv = H / G, hb = plan.head_block, T = plan.options.stages;
  const int kvh = kv_heads_of(0, hb, per_kv).second - kv_heads_of(0, hb, per_kv).first;
  const int64_t q_bundle_tok = int64_t(hb) * (3 * D * e + 4); // Q, O, dO and fp32 LSE
  const int64_t kv_tok = 2LL * kvh * D * e, dq_tok = int64_t(hb) * D * 4, dkv_tok = 2LL * kvh * D * 4;

  // fetches as in the forward, with the Q side carrying Q, O, dO and LSE
  const Fetches fx = plan_fetches(plan, per_kv, q_bundle_tok, kv_tok);
  const auto& q_first = fx.q_first;
  const auto& kv_first = fx.kv_first;
  std::set<std::tuple<int, int, int>> dq_parts, dkv_parts; // (device, block, head key) off the owner
  for (const auto& [key, stage] : q_first.entries())
    dq_parts.insert(key);
  for (const auto& [key, stage] : kv_first.entries())
    dkv_parts.insert(key);
  // gradient partials: (src, owner) -> one message with dQ and dKV; per owner the rows it sums
  std::map<std::pair<int, int>, Message> grad_msgs;
  std::vector<int64_t> dq_rows(static_cast<size_t>(W), 0), dkv_rows(static_cast<size_t>(W), 0);
  std::vector<int64_t> dq_sum_bytes(static_cast<size_t>(W), 0), dkv_sum_bytes(static_cast<size_t>(W), 0);
  std::vector<int64_t> acc_dq(static_cast<size_t>(W), 0), acc_dkv(static_cast<size_t>(W), 0);
  for (auto [dev, blk, h] : dq_parts) {
    const auto& bl = plan.blocks[size_t(blk)];
    Message& m = grad_msgs[{dev, bl.device}];
    add_slice(m.slices, bl);
    m.bytes += bl.tokens() * dq_tok;
    acc_dq[size_t(dev)] += bl.tokens() * dq_tok;
    dq_rows[size_t(bl.device)] += bl.tokens();
    dq_sum_bytes[size_t(bl.device)] += bl.tokens() * dq_tok;
  }
  for (auto [dev, blk, h] : dkv_parts) {
    const auto& bl = plan.blocks[size_t(blk)];
    Message& m = grad_msgs[{dev, bl.device}];
    add_slice(m.slices, bl);
    m.bytes += bl.tokens() * dkv_tok;
    acc_dkv[size_t(dev)] += bl.tokens() * dkv_tok;
    dkv_rows[size_t(bl.device)] += bl.tokens();
    dkv_sum_bytes[size_t(bl.device)] += bl.tokens() * dkv_tok;
  }
  const auto work_of = work_by_device(plan);

  for (int r = 0; r < W; ++r) {
    // the forward is final on this rank once its last compute and comm ops are done
    std::vector<int> fwd_done(2, -1);
    const int first_bwd_op = b.last_op(r) + 1;
    for (int id = 0; id < first_bwd_op; ++id) {
      const int st = b.op(r, id).stream;
      fwd_done[st == comp ? 0 : 1] = id;
    }
    std::vector<TokenSlice> mine;
    int64_t tokens = 0;
    for (const auto& bl : plan.blocks)
      if (bl.device == r) {
        mine.push_back({bl.seq, {bl.begin, bl.end}});
        tokens += bl.tokens();
      }
    b.add_buffer(r, {"do", "do", tokens * H * D * e, 0, H, mine, -1, -1, {}, {}});
    b.add_buffer(r, {"dq", "dq", tokens * H * D * 4, 0, H, mine, -1, -1, {}, {}});
    b.add_buffer(r, {"dkv", "dkv", tokens * 2 * G * D * 4, 0, G, mine, -1, -1, {}, {}});
    std::vector<std::string> accs;
    if (acc_dq[size_t(r)] > 0)
      accs.push_back("dq_acc");
    if (acc_dkv[size_t(r)] > 0)
      accs.push_back("dkv_acc");
    if (acc_dq[size_t(r)] > 0)
      b.add_buffer(r, {"dq_acc", "dq", acc_dq[size_t(r)], 0, H, {}, -1, -1, {}, {}});
    if (acc_dkv[size_t(r)] > 0)
      b.add_buffer(r, {"dkv_acc", "dkv", acc_dkv[size_t(r)], 0, G, {}, -1, -1, {}, {}});

    const StageInputs in =
        emit_stage_fetches(b, r, comm, T, fx, fwd_done, StageTags{tag_bq, tag_bkv}, "bwd stage ", "b");
    const auto& q_buf = in.q_buf;
    const auto& kv_buf = in.kv_buf;

    std::vector<int> after_compute;
    std::set<std::string> allocated;
    const auto& mine_work = work_of[size_t(r)];
    auto cursor = mine_work.begin();
    for (int t = 0; t <= T; ++t)
      for (int h = 0; h < plan.head_blocks; ++h) {
        std::vector<AttnSegment> segs;
        std::set<std::string> reads;
        std::set<std::string> writes;
        for (; cursor != mine_work.end() && (*cursor)->stage == t && (*cursor)->head_block == h; ++cursor) {
          const DcpWork& wk = **cursor;
          const auto& qb = plan.blocks[size_t(wk.q_block)];
          const auto& kb = plan.blocks[size_t(wk.kv_block)];
          segs.push_back({qb.seq, {qb.begin, qb.end}, {kb.begin, kb.end}});
          if (qb.device == r) {
            reads.insert({"q", "o", "lse", "do"});
            writes.insert("dq");
          } else {
            reads.insert(q_buf.at({q_first.at({r, wk.q_block, wk.head_block}), qb.device}));
            writes.insert("dq_acc");
          }
          if (kb.device == r) {
            reads.insert("kv");
            writes.insert("dkv");
          } else {
            const int kv_key = kv_heads_of(wk.head_block, hb, per_kv).first;
            reads.insert(kv_buf.at({kv_first.at({r, wk.kv_block, kv_key}), kb.device}));
            writes.insert("dkv_acc");
          }
        }
        if (segs.empty())
          continue;
        std::vector<int> deps = fwd_done;
        for (int ft = 1; ft <= t; ++ft)
          if (auto it = in.recv_ops.find(ft); it != in.recv_ops.end())
            deps.insert(deps.end(), it->second.begin(), it->second.end());
        std::vector<std::string> rd(reads.begin(), reads.end());
        int id = b.attention(r, comp, deps, Direction::BACKWARD, h * hb, (h + 1) * hb, segs,
                             "bwd stage " + std::to_string(t) + " attn heads " + std::to_string(h * hb), rd,
                             std::vector<std::string>(writes.begin(), writes.end()));
        after_compute.push_back(id);
        for (const auto& n : rd)
          if (n.rfind("bq_s", 0) == 0 || n.rfind("bkv_s", 0) == 0)
            b.set_free(r, n, id);
        for (const auto& n : accs)
          if (writes.count(n) && allocated.insert(n).second) // live from its first writer on
            b.set_alloc(r, n, id);
      }

    // gradient exchange (one group), then the owners sum what arrived into dq and dkv
    const int grp = b.next_group(r);
    std::vector<int> recvs;
    std::vector<std::string> sum_reads;
    for (int peer = 0; peer < W; ++peer) {
      if (auto it = grad_msgs.find({r, peer}); it != grad_msgs.end()) {
        const std::string n = "grad_to" + std::to_string(peer);
        b.add_buffer(r, {n, "dkv", it->second.bytes, 0, H, it->second.slices, -1, -1, {}, {}});
        int id = b.send(r, comm, after_compute, peer, it->second.bytes, kTagGrad, grp,
                        "bwd gradient partials to " + std::to_string(peer), n);
        b.set_alloc(r, n, after_compute.empty() ? id : after_compute.front());
        b.set_free(r, n, id);
        for (const auto& a : accs)
          b.set_free(r, a, id);
      }
      if (auto it = grad_msgs.find({peer, r}); it != grad_msgs.end()) {
        const std::string n = "grad_from" + std::to_string(peer);
        b.add_buffer(r, {n, "dkv", it->second.bytes, 0, H, it->second.slices, -1, -1, {}, {}});
        int id = b.recv(r, comm, {}, peer, it->second.bytes, kTagGrad, grp, "bwd gradient partials from " + std::to_string(peer), n);
        b.set_alloc(r, n, id);
        recvs.push_back(id);
        sum_reads.push_back(n);
      }
    }
    std::vector<int> deps = after_compute;
    deps.insert(deps.end(), recvs.begin(), recvs.end());
    int last = -1;
    if (dq_rows[size_t(r)] > 0)
      last = b.merge(r, comp, deps, Direction::BACKWARD, 0, H, dq_rows[size_t(r)], 2, dq_sum_bytes[size_t(r)],
                     "bwd sum dq partials", sum_reads, {"dq"});
    if (dkv_rows[size_t(r)] > 0)
      last = b.merge(r, comp, deps, Direction::BACKWARD, 0, H, dkv_rows[size_t(r)], 2, dkv_sum_bytes[size_t(r)],
                     "bwd sum dkv partials", sum_reads, {"dkv"});
    for (const auto& n : sum_reads)
      b.set_free(r, n, last);
  }
}

} // namespace cpsim::dcp
