// DCP as IR (schedules.md 5.5): per rank, stage 0 computes the work whose inputs are local while the
// comm stream fetches the Q and KV blocks of stage 1; stage t computes what arrived by stage t.
// Partial (O, LSE) of work done off the query block's owner are pre-merged per device, shipped to
// the owner after the last stage, and reduced there by one n-way LSE merge (DCP's delayed
// reduction). The plan itself comes from plan_dcp (dcp_plan.cpp); this file only emits it, and
// dcp_backward.cpp appends the backward for fwd_bwd.
#include "dcp_emit.hpp"

#include "cpsim/model/dcp_plan.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace cpsim {

using namespace dcp;

Schedule generate_dcp(const Scenario& sc, const MaskGeometry& mask) {
  const DcpOptions opt = dcp_options_from(sc);
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  const int per_kv = H / G;
  const DcpPlan plan = plan_dcp(sc, mask, opt);
  const int T = opt.stages, hb = plan.head_block;
  auto kv_range = [&](int h) { return kv_heads_of(h, hb, per_kv); };
  const int64_t q_tok = int64_t(hb) * D * e, part_tok = int64_t(hb) * (D * e + 4);

  // ---- fetches: the earliest stage at which a device needs each remote block (per head block)
  // key (stage, src, dst) -> message; Q and KV travel in separate messages into separate buffers
  std::map<std::tuple<int, int, int>, Message> q_msgs, kv_msgs;
  std::map<std::tuple<int, int, int>, int> q_first, kv_first; // (dst, block, head key) -> stage
  for (const DcpWork& wk : plan.work) {
    const auto& qb = plan.blocks[size_t(wk.q_block)];
    const auto& kb = plan.blocks[size_t(wk.kv_block)];
    if (qb.device != wk.device) {
      auto [it, fresh] = q_first.emplace(std::make_tuple(wk.device, wk.q_block, wk.head_block), wk.stage);
      if (!fresh)
        it->second = std::min(it->second, wk.stage);
    }
    if (kb.device != wk.device) {
      auto [it, fresh] = kv_first.emplace(std::make_tuple(wk.device, wk.kv_block, kv_range(wk.head_block).first), wk.stage);
      if (!fresh)
        it->second = std::min(it->second, wk.stage);
    }
  }
  const int kv_heads_per_hb = kv_range(0).second - kv_range(0).first;
  for (const auto& [key, stage] : q_first) {
    const int dst = std::get<0>(key), blk = std::get<1>(key);
    const auto& b = plan.blocks[size_t(blk)];
    Message& m = q_msgs[{stage, b.device, dst}];
    add_slice(m.slices, b);
    m.bytes += b.tokens() * q_tok;
  }
  for (const auto& [key, stage] : kv_first) {
    const int dst = std::get<0>(key), blk = std::get<1>(key);
    const auto& b = plan.blocks[size_t(blk)];
    Message& m = kv_msgs[{stage, b.device, dst}];
    add_slice(m.slices, b);
    m.bytes += b.tokens() * 2 * kv_heads_per_hb * D * e;
  }

  // ---- partial outputs: per (device, q block, head block) the stages that computed it
  std::map<std::tuple<int, int, int>, std::set<int>> stages_of; // (device, q block, head block) -> stages
  for (const DcpWork& wk : plan.work)
    stages_of[{wk.device, wk.q_block, wk.head_block}].insert(wk.stage);
  std::map<std::pair<int, int>, Message> out_msgs;                 // (src, owner) -> partials
  std::map<std::pair<int, int>, int> contributors;                 // (q block, head block) -> remote devices
  for (const auto& [key, st] : stages_of) {
    auto [dev, blk, h] = key;
    const auto& b = plan.blocks[size_t(blk)];
    if (b.device == dev)
      continue;
    Message& m = out_msgs[{dev, b.device}];
    add_slice(m.slices, b);
    m.bytes += b.tokens() * part_tok;
    contributors[{blk, h}]++;
  }

  // per device: its work in (stage, head block) order, and its (q block, head block) -> stages
  std::vector<std::vector<const DcpWork*>> work_of(static_cast<size_t>(W));
  for (const DcpWork& wk : plan.work)
    work_of[size_t(wk.device)].push_back(&wk);
  for (auto& v : work_of)
    std::stable_sort(v.begin(), v.end(), [](const DcpWork* a, const DcpWork* b) {
      return std::tie(a->stage, a->head_block) < std::tie(b->stage, b->head_block);
    });
  std::vector<std::vector<std::pair<int, const std::set<int>*>>> partials_of(static_cast<size_t>(W)); // (block, h)
  std::vector<std::vector<int>> partial_head(static_cast<size_t>(W));
  for (const auto& [key, st] : stages_of) {
    partials_of[size_t(std::get<0>(key))].push_back({std::get<1>(key), &st});
    partial_head[size_t(std::get<0>(key))].push_back(std::get<2>(key));
  }

  ScheduleBuilder bld(sc, mask, "dcp", W);
  const int comp = bld.add_stream("compute", StreamKind::COMPUTE);
  const int comm = bld.add_stream("comm", StreamKind::COMM);
  for (int r = 0; r < W; ++r) {
    std::vector<TokenSlice> mine;
    int64_t tokens = 0;
    for (const auto& b : plan.blocks)
      if (b.device == r) {
        mine.push_back({b.seq, {b.begin, b.end}});
        tokens += b.tokens();
      }
    bld.add_buffer(r, {"q", "q", tokens * H * D * e, 0, H, mine, -1, -1});
    bld.add_buffer(r, {"kv", "kv", tokens * 2 * G * D * e, 0, G, mine, -1, -1});
    bld.add_buffer(r, {"o", "o", tokens * H * D * e, 0, H, mine, -1, -1});
    bld.add_buffer(r, {"lse", "lse", tokens * 4 * H, 0, H, mine, -1, -1});

    // comm stream: one NCCL group per stage 1..T (sends of my blocks, receives of what I need)
    std::map<int, std::vector<int>> recv_ops;            // stage -> receive ops
    std::map<std::pair<int, int>, std::string> buf_from; // (stage, src) -> q buffer ; kv in kv_buf_from
    std::map<std::pair<int, int>, std::string> kv_buf_from;
    for (int t = 1; t <= T; ++t) {
      const int grp = bld.next_group(r);
      for (int peer = 0; peer < W; ++peer) {
        if (auto it = q_msgs.find({t, r, peer}); it != q_msgs.end())
          bld.send(r, comm, {}, peer, it->second.bytes, tag_q(t), grp, "stage " + std::to_string(t) + " q to " + std::to_string(peer), "q");
        if (auto it = kv_msgs.find({t, r, peer}); it != kv_msgs.end())
          bld.send(r, comm, {}, peer, it->second.bytes, tag_kv(t), grp, "stage " + std::to_string(t) + " kv to " + std::to_string(peer), "kv");
        if (auto it = q_msgs.find({t, peer, r}); it != q_msgs.end()) {
          const std::string n = "q_s" + std::to_string(t) + "_from" + std::to_string(peer);
          bld.add_buffer(r, {n, "q", it->second.bytes, 0, H, it->second.slices, -1, -1});
          int id = bld.recv(r, comm, {}, peer, it->second.bytes, tag_q(t), grp, "stage " + std::to_string(t) + " q from " + std::to_string(peer), n);
          bld.set_alloc(r, n, id);
          recv_ops[t].push_back(id);
          buf_from[{t, peer}] = n;
        }
        if (auto it = kv_msgs.find({t, peer, r}); it != kv_msgs.end()) {
          const std::string n = "kv_s" + std::to_string(t) + "_from" + std::to_string(peer);
          bld.add_buffer(r, {n, "kv", it->second.bytes, 0, G, it->second.slices, -1, -1});
          int id = bld.recv(r, comm, {}, peer, it->second.bytes, tag_kv(t), grp, "stage " + std::to_string(t) + " kv from " + std::to_string(peer), n);
          bld.set_alloc(r, n, id);
          recv_ops[t].push_back(id);
          kv_buf_from[{t, peer}] = n;
        }
      }
    }

    // compute stream: stage by stage, one launch per head block over all its work blocks; each
    // stage writes its own partial slots (DCP's BufferOut/BufferLSE), reduced once at the end
    std::vector<int> after_compute;
    std::vector<std::string> parts;
    for (int t = 0; t <= T; ++t) {
      const std::string part = "o_part_s" + std::to_string(t);
      int64_t part_bytes = 0;
      std::vector<TokenSlice> part_slices;
      for (const auto& [blk, st] : partials_of[size_t(r)])
        if (st->count(t)) {
          const auto& b = plan.blocks[size_t(blk)];
          part_bytes += b.tokens() * part_tok;
          add_slice(part_slices, b);
        }
      if (part_bytes == 0)
        continue;
      bld.add_buffer(r, {part, "o", part_bytes, 0, H, part_slices, -1, -1});
      parts.push_back(part);
      bool first = true;
      const auto& mine_work = work_of[size_t(r)];
      auto cursor = std::lower_bound(mine_work.begin(), mine_work.end(), t,
                                     [](const DcpWork* a, int stage) { return a->stage < stage; });
      for (int h = 0; h < plan.head_blocks; ++h) {
        std::vector<AttnSegment> segs;
        std::set<std::string> reads;
        for (; cursor != mine_work.end() && (*cursor)->stage == t && (*cursor)->head_block == h; ++cursor) {
          const DcpWork& wk = **cursor;
          const auto& qb = plan.blocks[size_t(wk.q_block)];
          const auto& kb = plan.blocks[size_t(wk.kv_block)];
          segs.push_back({qb.seq, {qb.begin, qb.end}, {kb.begin, kb.end}});
          reads.insert(qb.device == r ? std::string("q")
                                      : buf_from.at({q_first.at({r, wk.q_block, wk.head_block}), qb.device}));
          reads.insert(kb.device == r ? std::string("kv")
                                      : kv_buf_from.at({kv_first.at({r, wk.kv_block, kv_range(wk.head_block).first}), kb.device}));
        }
        if (segs.empty())
          continue;
        std::vector<int> deps; // inputs arrived in this or an earlier stage
        for (int ft = 1; ft <= t; ++ft)
          deps.insert(deps.end(), recv_ops[ft].begin(), recv_ops[ft].end());
        std::vector<std::string> rd(reads.begin(), reads.end());
        int id = bld.attention(r, comp, deps, Direction::FORWARD, h * hb, (h + 1) * hb, segs,
                               "stage " + std::to_string(t) + " attn heads " + std::to_string(h * hb), rd, {part});
        CPSIM_ASSERT(id >= 0, "a DCP work block holds visible cells by construction");
        after_compute.push_back(id);
        for (const auto& n : rd)
          if (n != "q" && n != "kv")
            bld.set_free(r, n, id);
        if (first)
          bld.set_alloc(r, part, id);
        first = false;
      }
    }

    // pre-merge partials of foreign query blocks computed in several stages, grouped by (heads, count)
    std::map<std::pair<int, int>, int64_t> pre_rows; // (head block, stages) -> rows
    for (size_t k = 0; k < partials_of[size_t(r)].size(); ++k) {
      const auto [blk, st] = partials_of[size_t(r)][k];
      if (plan.blocks[size_t(blk)].device == r || st->size() < 2)
        continue;
      pre_rows[{partial_head[size_t(r)][k], int(st->size())}] += plan.blocks[size_t(blk)].tokens();
    }
    std::vector<std::string> out_to;
    for (int peer = 0; peer < W; ++peer)
      if (auto it = out_msgs.find({r, peer}); it != out_msgs.end()) {
        const std::string n = "out_to" + std::to_string(peer);
        bld.add_buffer(r, {n, "o", it->second.bytes, 0, H, it->second.slices, -1, -1});
        out_to.push_back(n);
      }
    std::vector<int> pre_ops;
    for (const auto& [key, rows] : pre_rows) {
      int id = bld.merge(r, comp, after_compute, Direction::FORWARD, key.first * hb, (key.first + 1) * hb, rows,
                         key.second, 0, "pre-merge stage partials", parts, out_to);
      pre_ops.push_back(id);
    }
    for (const auto& n : out_to)
      bld.set_alloc(r, n, pre_ops.empty() ? (after_compute.empty() ? -1 : after_compute.front()) : pre_ops.front());

    // output exchange: partials of foreign rows to their owners (one NCCL group)
    const int grp = bld.next_group(r);
    std::vector<int> send_deps = after_compute;
    send_deps.insert(send_deps.end(), pre_ops.begin(), pre_ops.end());
    std::vector<int> out_recvs;
    std::vector<std::string> merge_reads = parts;
    for (int peer = 0; peer < W; ++peer) {
      if (auto it = out_msgs.find({r, peer}); it != out_msgs.end()) {
        const std::string n = "out_to" + std::to_string(peer);
        int id = bld.send(r, comm, send_deps, peer, it->second.bytes, kTagOut, grp, "output partials to " + std::to_string(peer), n);
        bld.set_free(r, n, id);
      }
      if (auto it = out_msgs.find({peer, r}); it != out_msgs.end()) {
        const std::string n = "out_from" + std::to_string(peer);
        bld.add_buffer(r, {n, "o", it->second.bytes, 0, H, it->second.slices, -1, -1});
        int id = bld.recv(r, comm, {}, peer, it->second.bytes, kTagOut, grp, "output partials from " + std::to_string(peer), n);
        bld.set_alloc(r, n, id);
        out_recvs.push_back(id);
        merge_reads.push_back(n);
      }
    }

    // final n-way LSE merge at the owner, grouped by (head block, partial count)
    std::map<std::pair<int, int>, int64_t> final_rows;
    for (int blk = 0; blk < int(plan.blocks.size()); ++blk) {
      if (plan.blocks[size_t(blk)].device != r)
        continue;
      for (int h = 0; h < plan.head_blocks; ++h) {
        int n = 0;
        if (auto it = stages_of.find({r, blk, h}); it != stages_of.end())
          n += int(it->second.size());
        const bool has_local = n > 0;
        if (auto it = contributors.find({blk, h}); it != contributors.end())
          n += it->second;
        if (n >= 2 || (n == 1 && !has_local)) // one local partial is already final
          final_rows[{h, n}] += plan.blocks[size_t(blk)].tokens();
      }
    }
    std::vector<int> merge_deps = after_compute;
    merge_deps.insert(merge_deps.end(), out_recvs.begin(), out_recvs.end());
    int last = -1;
    for (const auto& [key, rows] : final_rows)
      last = bld.merge(r, comp, merge_deps, Direction::FORWARD, key.first * hb, (key.first + 1) * hb, rows, key.second,
                       0, "final lse merge", merge_reads, {"o", "lse"});
    const int end = bld.last_op(r);
    for (const auto& n : merge_reads)
      bld.set_free(r, n, last >= 0 ? std::max(last, end) : end);
  }
  if (sc.pass == PassKind::FWD_BWD)
    emit_backward(bld, sc, plan, comp, comm);
  return bld.finish();
}

} // namespace cpsim
