// DCP's backward (schedules.md 5.5 step 5, convert_forward_to_backward): the forward's placement and
// stages are reused. A work block off its query block's owner needs that block's Q, O, dO and LSE
// (fetched once the owner's forward merge is final) and K, V of its key block; it produces partial
// dQ and dKV, accumulated in fp32 per device across stages and summed at the owners at the end.
#include "dcp_emit.hpp"
#include "ring_program.hpp"

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
  const int per_kv = H / G, hb = plan.head_block;
  auto kvr = [&](int h) { return kv_heads_of(h, hb, per_kv); };
  const int kvh = kvr(0).second - kvr(0).first;
  std::set<int> kv_keys; // the first KV head of each head block's group
  for (int h = 0; h < plan.head_blocks; ++h)
    kv_keys.insert(kvr(h).first);
  const int64_t q_bundle_tok = int64_t(hb) * (3 * D * e + 4); // Q, O, dO and fp32 LSE
  const int64_t kv_tok = 2LL * kvh * D * e, dq_tok = int64_t(hb) * D * 4, dkv_tok = 2LL * kvh * D * 4;

  // fetches as in the forward, with the Q side carrying Q, O, dO and LSE
  const Fetches fx = plan_fetches(plan, per_kv, q_bundle_tok, kv_tok);
  // gradient partials off the owner: (device, block, head key), from the first stages of the fetches
  std::set<std::tuple<int, int, int>> dq_parts, dkv_parts;
  for (const auto& [key, stage] : fx.q_first.entries())
    dq_parts.insert(key);
  for (const auto& [key, stage] : fx.kv_first.entries())
    dkv_parts.insert(key);
  const auto work_of = work_by_device(plan);
  auto slice_of = [&](int bi) {
    const auto& bl = plan.blocks[size_t(bi)];
    return TokenSlice{bl.seq, {bl.begin, bl.end}};
  };
  auto gq = [](const char* dir, int peer, int h) { return std::string("gdq_") + dir + std::to_string(peer) + "_h" + std::to_string(h); };
  auto gkv = [](const char* dir, int peer, int g) { return std::string("gdkv_") + dir + std::to_string(peer) + "_k" + std::to_string(g); };
  // the partials of head key `key` that device `from` computed for blocks device `to` owns, and their rows
  using Parts = std::set<std::tuple<int, int, int>>;
  auto partials_between = [&](const Parts& parts, int from, int key, int to) {
    std::pair<std::vector<TokenSlice>, int64_t> out{{}, 0};
    for (const auto& [dev, blk, k] : parts)
      if (dev == from && k == key && plan.blocks[size_t(blk)].device == to) {
        out.first.push_back(slice_of(blk));
        out.second += out.first.back().range.size();
      }
    return out;
  };

  for (int r = 0; r < W; ++r) {
    // the forward is final on this rank once its last compute and comm ops are done
    std::vector<int> fwd_done(2, -1);
    const int first_bwd_op = b.last_op(r) + 1;
    for (int id = 0; id < first_bwd_op; ++id)
      fwd_done[b.op(r, id).stream == comp ? 0 : 1] = id;
    std::vector<TokenSlice> mine;
    int64_t tokens = 0;
    for (const auto& bl : plan.blocks)
      if (bl.device == r) {
        mine.push_back({bl.seq, {bl.begin, bl.end}});
        tokens += bl.tokens();
      }
    b.add_buffer(r, ring::make_buffer("do", "do", tokens * H * D * e, 0, H, mine));
    b.add_buffer(r, ring::make_buffer("dq", "dq", tokens * H * D * 4, 0, H, mine));
    b.add_buffer(r, ring::make_buffer("dkv", "dkv", tokens * 2 * G * D * 4, 0, G, mine));

    const Pools pools = emit_pools(b, r, comp, comm, plan, work_of[size_t(r)], fx,
                                   QSide{{"q", "o", "do", "lse"}, {int64_t(D) * e, int64_t(D) * e, int64_t(D) * e, 4}},
                                   fwd_done, StageTags{tag_bq, tag_bkv}, "bwd stage ", "b");

    // per (stage, head block): one launch into its own fp32 dQ and bf16 dK, dV partials of the pool's rows
    std::vector<int> after_compute;
    std::vector<std::string> partials;
    for (const auto& [key, qb] : pools.q_blocks) {
      const auto [t, h] = key;
      std::vector<AttnSegment> segs;
      for (const DcpWork* wk : work_of[size_t(r)])
        if (wk->stage == t && wk->head_block == h) {
          const auto& a = plan.blocks[size_t(wk->q_block)];
          const auto& k = plan.blocks[size_t(wk->kv_block)];
          segs.push_back({a.seq, {a.begin, a.end}, {k.begin, k.end}});
        }
      std::vector<int> deps = fwd_done;
      for (int ft = 1; ft <= t; ++ft)
        if (auto it = pools.recv_ops.find(ft); it != pools.recv_ops.end())
          deps.insert(deps.end(), it->second.begin(), it->second.end());
      if (auto it = pools.copy.find(key); it != pools.copy.end())
        deps.push_back(it->second);
      const std::string suffix = "_t" + std::to_string(t) + "_h" + std::to_string(h);
      std::vector<TokenSlice> qt, kt;
      int64_t qn = 0, kn = 0;
      for (int bi : qb) {
        qt.push_back(slice_of(bi));
        qn += plan.blocks[size_t(bi)].tokens();
      }
      for (int bi : pools.kv_blocks.at(key)) {
        kt.push_back(slice_of(bi));
        kn += plan.blocks[size_t(bi)].tokens();
      }
      b.add_buffer(r, ring::make_buffer("dq" + suffix, "dq_acc", qn * dq_tok, h * hb, (h + 1) * hb, qt));
      b.add_buffer(r, ring::make_buffer("dkv" + suffix, "dkv", kn * kv_tok, kvr(h).first, kvr(h).second, kt));
      const auto& qp = pools.q.at(key);
      const int id = b.attention(r, comp, deps, Direction::BACKWARD, h * hb, (h + 1) * hb, segs,
                                 "bwd stage " + std::to_string(t) + " attn heads " + std::to_string(h * hb),
                                 {qp[0], pools.kv.at(key), qp[1], qp[3], qp[2]}, {"dq" + suffix, "dkv" + suffix});
      after_compute.push_back(id);
      for (const std::string& n : {"dq" + suffix, "dkv" + suffix}) {
        b.set_alloc(r, n, id);
        partials.push_back(n);
      }
      for (const auto& n : qp)
        if (n != "q" && n != "o" && n != "do" && n != "lse")
          b.set_free(r, n, id);
      if (pools.kv.at(key) != "kv")
        b.set_free(r, pools.kv.at(key), id);
    }

    // the partials summed per block: the owned ones into dq, dkv; the others into one fp32 buffer per owner and head
    // key (DCP accumulates per device across stages), added in place by token
    std::vector<std::string> sums = {"dq", "dkv"};
    std::map<int, std::vector<BufferRegion>> to_peer;
    std::map<int, int64_t> to_bytes;
    for (int p = 0; p < W; ++p) {
      if (p == r)
        continue;
      for (int h = 0; h < plan.head_blocks; ++h) {
        auto [toks, n] = partials_between(dq_parts, r, h, p);
        if (toks.empty())
          continue;
        b.add_buffer(r, ring::make_buffer(gq("to", p, h), "dq", n * dq_tok, h * hb, (h + 1) * hb, toks));
        sums.push_back(gq("to", p, h));
        to_peer[p].push_back({gq("to", p, h), {}, {}});
        to_bytes[p] += n * dq_tok;
      }
      for (int g : kv_keys) {
        auto [toks, n] = partials_between(dkv_parts, r, g, p);
        if (toks.empty())
          continue;
        b.add_buffer(r, ring::make_buffer(gkv("to", p, g), "dkv", n * dkv_tok, g, g + kvh, toks));
        sums.push_back(gkv("to", p, g));
        to_peer[p].push_back({gkv("to", p, g), {}, {}});
        to_bytes[p] += n * dkv_tok;
      }
    }
    std::vector<std::string> sum_reads = partials;
    sum_reads.insert(sum_reads.end(), sums.begin(), sums.end());
    int64_t sum_bytes = 0;
    for (const auto& n : partials)
      sum_bytes += b.buffer(r, n).bytes;
    int64_t sum_rows = 0;
    for (const auto& [key, qb] : pools.q_blocks)
      for (int bi : qb)
        sum_rows += plan.blocks[size_t(bi)].tokens();
    const int acc = after_compute.empty() ? -1
                                          : b.merge(r, comp, after_compute, Direction::BACKWARD, 0, H, sum_rows,
                                                    int(partials.size()), sum_bytes, "bwd sum stage partials", sum_reads, sums);
    for (const auto& n : partials)
      b.set_free(r, n, acc);
    for (size_t i = 2; i < sums.size(); ++i)
      b.set_alloc(r, sums[i], acc);

    // gradient exchange (one group), then the owners add what arrived into dq and dkv
    const int grp = b.next_group(r);
    std::vector<int> recvs;
    std::vector<std::string> from;
    for (int peer = 0; peer < W; ++peer) {
      if (auto it = to_peer.find(peer); it != to_peer.end()) {
        const int id = b.send(r, comm, {acc}, peer, to_bytes[peer], kTagGrad, grp, "bwd gradient partials to " + std::to_string(peer),
                              it->second[0].buffer);
        b.set_regions(r, id, it->second);
        for (const auto& g : it->second)
          b.set_free(r, g.buffer, id);
      }
      std::vector<BufferRegion> in;
      int64_t bytes = 0;
      for (int h = 0; h < plan.head_blocks && peer != r; ++h) {
        auto [toks, n] = partials_between(dq_parts, peer, h, r);
        if (toks.empty())
          continue;
        b.add_buffer(r, ring::make_buffer(gq("from", peer, h), "dq", n * dq_tok, h * hb, (h + 1) * hb, toks));
        in.push_back({gq("from", peer, h), {}, {}});
        bytes += n * dq_tok;
      }
      for (int g : kv_keys) {
        if (peer == r)
          break;
        auto [toks, n] = partials_between(dkv_parts, peer, g, r);
        if (toks.empty())
          continue;
        b.add_buffer(r, ring::make_buffer(gkv("from", peer, g), "dkv", n * dkv_tok, g, g + kvh, toks));
        in.push_back({gkv("from", peer, g), {}, {}});
        bytes += n * dkv_tok;
      }
      if (in.empty())
        continue;
      const int id = b.recv(r, comm, {}, peer, bytes, kTagGrad, grp, "bwd gradient partials from " + std::to_string(peer), in[0].buffer);
      b.set_regions(r, id, in);
      for (const auto& g : in) {
        b.set_alloc(r, g.buffer, id);
        from.push_back(g.buffer);
      }
      recvs.push_back(id);
    }
    std::vector<int> deps = recvs;
    deps.push_back(acc);
    int64_t dq_rows = 0, dkv_rows = 0, dq_bytes = 0, dkv_bytes = 0;
    for (const auto& n : from) {
      const Buffer& x = b.buffer(r, n);
      (x.tensor == "dq" ? dq_bytes : dkv_bytes) += x.bytes;
      (x.tensor == "dq" ? dq_rows : dkv_rows) += x.bytes / (x.tensor == "dq" ? dq_tok : dkv_tok);
    }
    std::vector<std::string> reads = {"dq", "dkv"};
    reads.insert(reads.end(), from.begin(), from.end());
    int last = -1;
    if (dq_rows > 0)
      last = b.merge(r, comp, deps, Direction::BACKWARD, 0, H, dq_rows, 2, dq_bytes, "bwd sum dq partials", reads, {"dq"});
    if (dkv_rows > 0)
      last = b.merge(r, comp, deps, Direction::BACKWARD, 0, H, dkv_rows, 2, dkv_bytes, "bwd sum dkv partials", reads, {"dkv"});
    for (const auto& n : from)
      b.set_free(r, n, std::max(last, b.last_op(r)));
  }
}

} // namespace cpsim::dcp
