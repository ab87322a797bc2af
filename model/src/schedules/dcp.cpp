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
#include <bitset>
#include <map>
#include <tuple>

namespace cpsim {

namespace dcp {

namespace {
const std::string kLocalQ = "q", kLocalKv = "kv"; // the resident buffers a work block reads when local
} // namespace

StageInputs emit_stage_fetches(ScheduleBuilder& b, int r, int comm, int stages, const Fetches& fx,
                               const std::vector<int>& send_deps, StageTags tags, const std::string& label,
                               const std::string& buf_prefix) {
  const int H = b.scenario().workload.heads, G = b.scenario().workload.kv_heads, W = b.scenario().parallel.cp;
  StageInputs in;
  for (int t = 1; t <= stages; ++t) {
    const int grp = b.next_group(r);
    const std::string st = label + std::to_string(t);
    for (int peer = 0; peer < W; ++peer) {
      if (auto it = fx.q_msgs.find({t, r, peer}); it != fx.q_msgs.end())
        b.send(r, comm, send_deps, peer, it->second.bytes, tags.q(t), grp, st + " q to " + std::to_string(peer), "q");
      if (auto it = fx.kv_msgs.find({t, r, peer}); it != fx.kv_msgs.end())
        b.send(r, comm, send_deps, peer, it->second.bytes, tags.kv(t), grp, st + " kv to " + std::to_string(peer), "kv");
      for (bool q_side : {true, false}) {
        const auto& msgs = q_side ? fx.q_msgs : fx.kv_msgs;
        auto it = msgs.find({t, peer, r});
        if (it == msgs.end())
          continue;
        const std::string n = buf_prefix + (q_side ? "q_s" : "kv_s") + std::to_string(t) + "_from" + std::to_string(peer);
        b.add_buffer(r, {n, q_side ? "q" : "kv", it->second.bytes, 0, q_side ? H : G, it->second.slices, -1, -1, {}, {}});
        int id = b.recv(r, comm, send_deps, peer, it->second.bytes, q_side ? tags.q(t) : tags.kv(t), grp,
                        st + (q_side ? " q from " : " kv from ") + std::to_string(peer), n);
        b.set_alloc(r, n, id);
        in.recv_ops[t].push_back(id);
        (q_side ? in.q_buf : in.kv_buf)[{t, peer}] = n;
      }
    }
  }
  return in;
}

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

/** The distinct names among `names`, sorted: the order an op lists the buffers it reads. */
std::vector<std::string> sorted_names(std::vector<const std::string*> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end()); // one pointer per buffer
  std::vector<std::string> out;
  for (const std::string* n : names)
    out.push_back(*n);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
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
  const auto& q_first = fx.q_first;
  const auto& kv_first = fx.kv_first;

  // ---- partial outputs: per (device, q block, head block) the stages that computed it
  const std::vector<Partial> partials = partials_of_plan(plan);
  std::vector<size_t> first_partial; // of each device, and the end
  for (int r = 0; r <= W; ++r)
    first_partial.push_back(size_t(std::lower_bound(partials.begin(), partials.end(), r,
                                                    [](const Partial& p, int d) { return p.device < d; }) -
                                   partials.begin()));
  std::map<std::pair<int, int>, Message> out_msgs; // (src, owner) -> partials
  std::vector<int> contributors(plan.blocks.size() * size_t(plan.head_blocks), 0); // remote devices per (q block, head block)
  for (const Partial& pt : partials) {
    const auto& b = plan.blocks[size_t(pt.q_block)];
    if (b.device == pt.device)
      continue;
    Message& m = out_msgs[{pt.device, b.device}];
    add_slice(m.slices, b);
    m.bytes += b.tokens() * part_tok;
    contributors[size_t(pt.q_block) * size_t(plan.head_blocks) + size_t(pt.head_block)]++;
  }

  // per device: its work in (stage, head block) order
  const auto work_of = work_by_device(plan);

  ScheduleBuilder bld(sc, mask, "dcp", W);
  const int comp = bld.add_stream("compute", StreamKind::COMPUTE);
  const int comm = bld.add_stream("comm", StreamKind::COMM);
  for (int r = 0; r < W; ++r) {
    const auto my_partials_begin = partials.begin() + std::ptrdiff_t(first_partial[size_t(r)]);
    const auto my_partials_end = partials.begin() + std::ptrdiff_t(first_partial[size_t(r) + 1]);
    std::vector<TokenSlice> mine;
    int64_t tokens = 0;
    for (const auto& b : plan.blocks)
      if (b.device == r) {
        mine.push_back({b.seq, {b.begin, b.end}});
        tokens += b.tokens();
      }
    bld.add_buffer(r, {"q", "q", tokens * H * D * e, 0, H, mine, -1, -1, {}, {}});
    bld.add_buffer(r, {"kv", "kv", tokens * 2 * G * D * e, 0, G, mine, -1, -1, {}, {}});
    bld.add_buffer(r, {"o", "o", tokens * H * D * e, 0, H, mine, -1, -1, {}, {}});
    bld.add_buffer(r, {"lse", "lse", tokens * 4 * H, 0, H, mine, -1, -1, {}, {}});

    // comm stream: one NCCL group per stage 1..T (sends of my blocks, receives of what I need)
    const StageInputs in = emit_stage_fetches(bld, r, comm, T, fx, {}, StageTags{tag_q, tag_kv}, "stage ", "");
    const auto& recv_ops = in.recv_ops;
    const auto& buf_from = in.q_buf;
    const auto& kv_buf_from = in.kv_buf;

    // compute stream: stage by stage, one launch per head block over all its work blocks; each
    // stage writes its own partial slots (DCP's BufferOut/BufferLSE), reduced once at the end
    std::vector<int> after_compute;
    std::vector<std::string> parts;
    for (int t = 0; t <= T; ++t) {
      const std::string part = "o_part_s" + std::to_string(t);
      int64_t part_bytes = 0;
      std::vector<TokenSlice> part_slices;
      for (auto pt = my_partials_begin; pt != my_partials_end; ++pt)
        if (pt->stages.test(size_t(t))) {
          const auto& b = plan.blocks[size_t(pt->q_block)];
          part_bytes += b.tokens() * part_tok;
          add_slice(part_slices, b);
        }
      if (part_bytes == 0)
        continue;
      bld.add_buffer(r, {part, "o", part_bytes, 0, H, part_slices, -1, -1, {}, {}});
      parts.push_back(part);
      bool first = true;
      const auto& mine_work = work_of[size_t(r)];
      auto cursor = std::lower_bound(mine_work.begin(), mine_work.end(), t,
                                     [](const DcpWork* a, int stage) { return a->stage < stage; });
      for (int h = 0; h < plan.head_blocks; ++h) {
        std::vector<AttnSegment> segs;
        std::vector<const std::string*> reads;
        for (; cursor != mine_work.end() && (*cursor)->stage == t && (*cursor)->head_block == h; ++cursor) {
          const DcpWork& wk = **cursor;
          const auto& qb = plan.blocks[size_t(wk.q_block)];
          const auto& kb = plan.blocks[size_t(wk.kv_block)];
          segs.push_back({qb.seq, {qb.begin, qb.end}, {kb.begin, kb.end}});
          reads.push_back(qb.device == r ? &kLocalQ : &buf_from.at({q_first.at({r, wk.q_block, wk.head_block}), qb.device}));
          reads.push_back(kb.device == r ? &kLocalKv
                                         : &kv_buf_from.at({kv_first.at({r, wk.kv_block, kv_range(wk.head_block).first}), kb.device}));
        }
        if (segs.empty())
          continue;
        std::vector<int> deps; // inputs arrived in this or an earlier stage
        for (int ft = 1; ft <= t; ++ft)
          if (auto it = recv_ops.find(ft); it != recv_ops.end())
            deps.insert(deps.end(), it->second.begin(), it->second.end());
        const std::vector<std::string> rd = sorted_names(std::move(reads));
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
    for (auto pt = my_partials_begin; pt != my_partials_end; ++pt) {
      const int n = int(pt->stages.count());
      if (plan.blocks[size_t(pt->q_block)].device == r || n < 2)
        continue;
      pre_rows[{pt->head_block, n}] += plan.blocks[size_t(pt->q_block)].tokens();
    }
    std::vector<std::string> out_to;
    for (int peer = 0; peer < W; ++peer)
      if (auto it = out_msgs.find({r, peer}); it != out_msgs.end()) {
        const std::string n = "out_to" + std::to_string(peer);
        bld.add_buffer(r, {n, "o", it->second.bytes, 0, H, it->second.slices, -1, -1, {}, {}});
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
        bld.add_buffer(r, {n, "o", it->second.bytes, 0, H, it->second.slices, -1, -1, {}, {}});
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
        const Partial key{r, blk, h, {}};
        auto it = std::lower_bound(my_partials_begin, my_partials_end, key,
                                   [](const Partial& a, const Partial& b) { return a.key() < b.key(); });
        if (it != my_partials_end && it->key() == key.key())
          n += int(it->stages.count());
        const bool has_local = n > 0;
        n += contributors[size_t(blk) * size_t(plan.head_blocks) + size_t(h)];
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
