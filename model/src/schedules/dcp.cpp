// DCP as IR (schedules.md 5.5): per rank, stage 0 computes the work whose inputs are local while the
// comm stream fetches the Q and KV blocks of stage 1; stage t computes what arrived by stage t.
// Partial (O, LSE) of work done off the query block's owner are pre-merged per device, shipped to
// the owner after the last stage, and reduced there by one n-way LSE merge (DCP's delayed
// reduction). The plan itself comes from plan_dcp (dcp_plan.cpp); this file only emits it, and
// dcp_backward.cpp appends the backward for fwd_bwd.
#include "dcp_emit.hpp"
#include "ring_program.hpp"

#include "cpsim/model/dcp_plan.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <bitset>
#include <map>
#include <set>
#include <tuple>

namespace cpsim {

namespace dcp {

} // namespace dcp

using namespace dcp;

namespace {

/** A (device, q block, head block) whose output the device computes part of, and the stages it does so in. */
struct Partial {
  int device = 0, q_block = 0, head_block = 0;
  std::bitset<kDcpMaxStages + 1> stages;

  auto key() const { return std::tie(device, q_block, head_block); }
};

/** One Partial per (device, q block, head block) that has work, in that order. */
std::vector<Partial> partials_of_plan(const DcpPlan& plan) {
  // (device, q block, head block, stage) packed into one integer that sorts like the tuple
  const int64_t blocks = int64_t(plan.blocks.size()), heads = plan.head_blocks, stages = kDcpMaxStages + 1;
  std::vector<int64_t> packed;
  packed.reserve(plan.work.size());
  for (const DcpWork& wk : plan.work)
    packed.push_back(((wk.device * blocks + wk.q_block) * heads + wk.head_block) * stages + wk.stage);
  std::sort(packed.begin(), packed.end());
  std::vector<Partial> out;
  for (int64_t x : packed) {
    const int64_t key = x / stages;
    const Partial p{int(key / heads / blocks), int(key / heads % blocks), int(key % heads), {}};
    if (out.empty() || out.back().key() != p.key())
      out.push_back(p);
    out.back().stages.set(size_t(x % stages));
  }
  return out;
}

} // namespace

Schedule generate_dcp(const Scenario& sc, const MaskGeometry& mask) {
  const DcpOptions opt = dcp_options_from(sc);
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  const int per_kv = H / G;
  const DcpPlan plan = plan_dcp(sc, mask, opt);
  const int T = opt.stages, hb = plan.head_block;
  auto kv_range = [&](int h) { return kv_heads_of(h, hb, per_kv); };
  const int64_t q_tok = int64_t(hb) * D * e, part_tok = int64_t(hb) * (D * e + 4);

  // ---- fetches: each remote block once, by the first stage that needs it (Q and KV apart)
  const int kv_heads_per_hb = kv_range(0).second - kv_range(0).first;
  const Fetches fx = plan_fetches(plan, per_kv, q_tok, 2LL * kv_heads_per_hb * D * e);

  // ---- partial outputs: per (device, q block, head block) the stages that computed it
  const std::vector<Partial> partials = partials_of_plan(plan);
  std::vector<size_t> first_partial; // of each device, and the end
  for (int r = 0; r <= W; ++r)
    first_partial.push_back(size_t(std::lower_bound(partials.begin(), partials.end(), r,
                                                    [](const Partial& p, int d) { return p.device < d; }) -
                                   partials.begin()));
  std::vector<int> contributors(plan.blocks.size() * size_t(plan.head_blocks), 0); // remote devices per (q block, head block)
  for (const Partial& pt : partials)
    if (plan.blocks[size_t(pt.q_block)].device != pt.device)
      contributors[size_t(pt.q_block) * size_t(plan.head_blocks) + size_t(pt.head_block)]++;
  auto slice_of = [&](int bi) {
    const auto& bl = plan.blocks[size_t(bi)];
    return TokenSlice{bl.seq, {bl.begin, bl.end}};
  };

  // per device: its work in (stage, head block) order
  const auto work_of = work_by_device(plan);

  ScheduleBuilder bld(sc, mask, "dcp", W);
  const int comp = bld.add_stream("compute", StreamKind::COMPUTE);
  const int comm = bld.add_stream("comm", StreamKind::COMM);
  for (int r = 0; r < W; ++r) {
    const auto my_begin = partials.begin() + std::ptrdiff_t(first_partial[size_t(r)]);
    const auto my_end = partials.begin() + std::ptrdiff_t(first_partial[size_t(r) + 1]);
    std::vector<TokenSlice> mine;
    int64_t tokens = 0;
    for (const auto& b : plan.blocks)
      if (b.device == r) {
        mine.push_back({b.seq, {b.begin, b.end}});
        tokens += b.tokens();
      }
    bld.add_buffer(r, ring::make_buffer("q", "q", tokens * H * D * e, 0, H, mine));
    bld.add_buffer(r, ring::make_buffer("kv", "kv", tokens * 2 * G * D * e, 0, G, mine));
    bld.add_buffer(r, ring::make_buffer("o", "o", tokens * H * D * e, 0, H, mine));
    bld.add_buffer(r, ring::make_buffer("lse", "lse", tokens * 4 * H, 0, H, mine));

    // stage groups on the comm stream and the block buffers of every launch (dcp_pools.cpp)
    const Pools pools = emit_pools(bld, r, comp, comm, plan, work_of[size_t(r)], fx, QSide{{"q"}, {int64_t(D) * e}}, {},
                                   StageTags{tag_q, tag_kv}, "stage ", "");
    auto partial_of = [&](int bi, int h) -> const Partial* {
      const Partial key{r, bi, h, {}};
      auto it = std::lower_bound(my_begin, my_end, key, [](const Partial& a, const Partial& x) { return a.key() < x.key(); });
      return it != my_end && it->key() == key.key() ? &*it : nullptr;
    };
    // a launch writes the outputs directly when it reads the resident Q and every row's partial is the only one
    auto direct = [&](int t, int h) {
      if (pools.q.at({t, h})[0] != "q")
        return false;
      for (int bi : pools.q_blocks.at({t, h}))
        if (contributors[size_t(bi) * size_t(plan.head_blocks) + size_t(h)] != 0 || partial_of(bi, h)->stages.count() != 1)
          return false;
      return true;
    };

    // compute stream: stage by stage, one launch per head block over all its work blocks; each (stage, head block)
    // writes its own partial O and LSE (DCP's BufferOut/BufferLSE), reduced once at the end
    std::vector<int> after_compute;
    std::map<std::pair<int, int>, std::pair<std::string, std::string>> part; // (t, h) -> partial o, lse
    for (const auto& [key, qb] : pools.q_blocks) {
      const auto [t, h] = key;
      std::vector<AttnSegment> segs;
      for (const DcpWork* wk : work_of[size_t(r)])
        if (wk->stage == t && wk->head_block == h) {
          const auto& a = plan.blocks[size_t(wk->q_block)];
          const auto& k = plan.blocks[size_t(wk->kv_block)];
          segs.push_back({a.seq, {a.begin, a.end}, {k.begin, k.end}});
        }
      std::vector<int> deps; // inputs arrived in this or an earlier stage, and copied in
      for (int ft = 1; ft <= t; ++ft)
        if (auto it = pools.recv_ops.find(ft); it != pools.recv_ops.end())
          deps.insert(deps.end(), it->second.begin(), it->second.end());
      if (auto it = pools.copy.find(key); it != pools.copy.end())
        deps.push_back(it->second);
      std::pair<std::string, std::string> out{"o", "lse"};
      if (!direct(t, h)) {
        out = {"o_t" + std::to_string(t) + "_h" + std::to_string(h), "lse_t" + std::to_string(t) + "_h" + std::to_string(h)};
        std::vector<TokenSlice> toks;
        int64_t n = 0;
        for (int bi : qb) {
          toks.push_back(slice_of(bi));
          n += plan.blocks[size_t(bi)].tokens();
        }
        bld.add_buffer(r, ring::make_buffer(out.first, "o", n * q_tok, h * hb, (h + 1) * hb, toks));
        bld.add_buffer(r, ring::make_buffer(out.second, "lse", n * 4 * hb, h * hb, (h + 1) * hb, toks));
        part[key] = out;
      }
      const int id = bld.attention(r, comp, deps, Direction::FORWARD, h * hb, (h + 1) * hb, segs,
                                   "stage " + std::to_string(t) + " attn heads " + std::to_string(h * hb),
                                   {pools.q.at(key)[0], pools.kv.at(key)}, {out.first, out.second});
      CPSIM_ASSERT(id >= 0, "a DCP work block holds visible cells by construction");
      after_compute.push_back(id);
      for (const std::string& n : {pools.q.at(key)[0], pools.kv.at(key)})
        if (n != "q" && n != "kv")
          bld.set_free(r, n, id);
      if (part.count(key)) {
        bld.set_alloc(r, out.first, id);
        bld.set_alloc(r, out.second, id);
      }
    }
    auto stage_parts = [&](int h) { // the (o, lse) partials of head block h, stage order: what merges read
      std::vector<std::string> v;
      for (const auto& [key, names] : part)
        if (key.second == h)
          v.insert(v.end(), {names.first, names.second});
      return v;
    };

    // pre-merge partials of foreign query blocks computed in several stages, grouped by (head block, stages)
    std::map<std::pair<int, int>, int64_t> pre_rows; // (head block, stages) -> rows
    std::map<int, std::vector<TokenSlice>> pre_slices; // head block -> the blocks pre-merged
    for (auto pt = my_begin; pt != my_end; ++pt) {
      const int n = int(pt->stages.count());
      if (plan.blocks[size_t(pt->q_block)].device == r || n < 2)
        continue;
      pre_rows[{pt->head_block, n}] += plan.blocks[size_t(pt->q_block)].tokens();
      pre_slices[pt->head_block].push_back(slice_of(pt->q_block));
    }
    auto pm = [](int h) { return std::make_pair("pm_o_h" + std::to_string(h), "pm_lse_h" + std::to_string(h)); };
    for (const auto& [h, toks] : pre_slices) {
      int64_t n = 0;
      for (const auto& x : toks)
        n += x.range.size();
      bld.add_buffer(r, ring::make_buffer(pm(h).first, "o", n * q_tok, h * hb, (h + 1) * hb, toks));
      bld.add_buffer(r, ring::make_buffer(pm(h).second, "lse", n * 4 * hb, h * hb, (h + 1) * hb, toks));
    }
    std::vector<int> pre_ops;
    std::set<int> pm_started;
    for (const auto& [key, rows] : pre_rows) {
      const int id = bld.merge(r, comp, after_compute, Direction::FORWARD, key.first * hb, (key.first + 1) * hb, rows,
                               key.second, 0, "pre-merge stage partials", stage_parts(key.first),
                               {pm(key.first).first, pm(key.first).second});
      pre_ops.push_back(id);
      if (pm_started.insert(key.first).second) { // live from the head block's first pre-merge
        bld.set_alloc(r, pm(key.first).first, id);
        bld.set_alloc(r, pm(key.first).second, id);
      }
    }

    // output exchange: partials of foreign rows to their owners (one NCCL group), O and LSE regions per block
    const int grp = bld.next_group(r);
    std::vector<int> send_deps = after_compute;
    send_deps.insert(send_deps.end(), pre_ops.begin(), pre_ops.end());
    std::vector<int> out_recvs;
    std::vector<std::string> from_bufs;            // received partials
    std::map<int, std::vector<std::string>> from_h; // head block -> its received (o, lse) pairs
    int last_send = -1;
    for (int peer = 0; peer < W; ++peer) {
      // mine for peer: its blocks I computed partials of, by head block
      std::vector<BufferRegion> rs;
      int64_t bytes = 0;
      for (int h = 0; h < plan.head_blocks; ++h)
        for (auto pt = my_begin; pt != my_end; ++pt) {
          if (pt->head_block != h || plan.blocks[size_t(pt->q_block)].device != peer || peer == r)
            continue;
          const TokenSlice t = slice_of(pt->q_block);
          std::pair<std::string, std::string> src = pm(h);
          if (pt->stages.count() == 1)
            for (int st = 0; st <= T; ++st)
              if (pt->stages.test(size_t(st)))
                src = part.at({st, h});
          rs.push_back({src.first, {t}, {}});
          rs.push_back({src.second, {t}, {}});
          bytes += t.range.size() * part_tok;
        }
      if (!rs.empty()) {
        const int id = bld.send(r, comm, send_deps, peer, bytes, kTagOut, grp, "output partials to " + std::to_string(peer), rs[0].buffer);
        bld.set_regions(r, id, rs);
        last_send = std::max(last_send, id);
      }
      // theirs for me: my blocks the peer computed partials of
      std::vector<BufferRegion> in;
      bytes = 0;
      for (int h = 0; h < plan.head_blocks; ++h) {
        std::vector<TokenSlice> toks;
        for (auto pt = partials.begin() + std::ptrdiff_t(first_partial[size_t(peer)]);
             pt != partials.begin() + std::ptrdiff_t(first_partial[size_t(peer) + 1]); ++pt)
          if (pt->head_block == h && plan.blocks[size_t(pt->q_block)].device == r && peer != r)
            toks.push_back(slice_of(pt->q_block));
        if (toks.empty())
          continue;
        const std::string o = "o_from" + std::to_string(peer) + "_h" + std::to_string(h), l = "lse_from" + std::to_string(peer) + "_h" + std::to_string(h);
        int64_t n = 0;
        for (const auto& x : toks) {
          n += x.range.size();
          in.push_back({o, {x}, {}});
          in.push_back({l, {x}, {}});
        }
        bld.add_buffer(r, ring::make_buffer(o, "o", n * q_tok, h * hb, (h + 1) * hb, toks));
        bld.add_buffer(r, ring::make_buffer(l, "lse", n * 4 * hb, h * hb, (h + 1) * hb, toks));
        from_bufs.insert(from_bufs.end(), {o, l});
        from_h[h].insert(from_h[h].end(), {o, l});
        bytes += n * part_tok;
      }
      if (!in.empty()) {
        const int id = bld.recv(r, comm, {}, peer, bytes, kTagOut, grp, "output partials from " + std::to_string(peer), in[0].buffer);
        bld.set_regions(r, id, in);
        for (const auto& g : in)
          bld.set_alloc(r, g.buffer, id);
        out_recvs.push_back(id);
      }
    }

    // final n-way LSE merge at the owner, grouped by (head block, partial count); rows a launch wrote directly are done
    std::map<std::pair<int, int>, int64_t> final_rows;
    for (int blk = 0; blk < int(plan.blocks.size()); ++blk) {
      if (plan.blocks[size_t(blk)].device != r)
        continue;
      for (int h = 0; h < plan.head_blocks; ++h) {
        const Partial* pt = partial_of(blk, h);
        int n = pt ? int(pt->stages.count()) : 0;
        bool written = false;
        if (pt && n == 1)
          for (int st = 0; st <= T; ++st)
            written = written || (pt->stages.test(size_t(st)) && !part.count({st, h}));
        n += contributors[size_t(blk) * size_t(plan.head_blocks) + size_t(h)];
        if (n >= 1 && !written)
          final_rows[{h, n}] += plan.blocks[size_t(blk)].tokens();
      }
    }
    std::vector<int> merge_deps = after_compute;
    merge_deps.insert(merge_deps.end(), out_recvs.begin(), out_recvs.end());
    int last = -1;
    for (const auto& [key, rows] : final_rows) {
      std::vector<std::string> reads = stage_parts(key.first);
      reads.insert(reads.end(), from_h[key.first].begin(), from_h[key.first].end());
      last = bld.merge(r, comp, merge_deps, Direction::FORWARD, key.first * hb, (key.first + 1) * hb, rows, key.second,
                       0, "final lse merge", reads, {"o", "lse"});
    }
    const int end = std::max({bld.last_op(r), last, last_send});
    for (const auto& [key, names] : part) {
      bld.set_free(r, names.first, end);
      bld.set_free(r, names.second, end);
    }
    for (const auto& [h, toks] : pre_slices) {
      bld.set_free(r, pm(h).first, end);
      bld.set_free(r, pm(h).second, end);
    }
    for (const auto& n : from_bufs)
      bld.set_free(r, n, end);
  }
  if (sc.pass == PassKind::FWD_BWD)
    emit_backward(bld, sc, plan, comp, comm);
  return bld.finish();
}

std::vector<Json> dcp_variants(const Scenario& sc) {
  // DCP's own heuristic, then the block sizes its experiments grid-search (run_experiments.py),
  // where the longest sequence is long enough for the block to matter and the plan stays small
  std::vector<Json> out = {Json::object()};
  const auto& lens = sc.workload.seq_lens;
  const int64_t longest = *std::max_element(lens.begin(), lens.end());
  for (int64_t b : {1024, 2048, 4096}) {
    double pairs = 0;
    for (int64_t s : lens)
      pairs += double((s + b - 1) / b) * double((s + b - 1) / b);
    if (b < longest && pairs <= 65536.0)
      out.push_back(Json{{"block", b}});
  }
  return out;
}

} // namespace cpsim
