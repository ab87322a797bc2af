// DSV sparsity-aware context parallelism (schedules.md 6): cp = hcp x scp ranks on a mesh.
//  - HCP (head-wise, Ulysses-like) over each group of hcp ranks: an all-to-all turns a token part
//    x all heads into the SCP chunk x the rank's heads. Naive: heads in order, an even all-to-all.
//    Sparsity-aware: KV-head groups placed by Longest-Processing-Time on their sparse work, then
//    an uneven all-to-all (NCCL's pairwise exchange with per-peer sizes).
//  - The low-rank predictor on the rank's queries: project Q_lr, K_lr; all-gather K_lr over the
//    SCP group (it is d_lr wide; every query must score every key); the rank-r estimate for one
//    proxy query per query group; top-k selection writing int32 indices.
//  - SCP (sequence-wise) over each group of scp ranks holding the same heads: naive all-gathers K
//    and V; sparsity-aware exchanges counts (int32[scp]) and index triples (12 bytes a token),
//    then only the K and V rows of the key blocks the rank's queries need (uneven all-to-alls).
//  - Sparse attention (non-causal kernel over gathered KV rows): tiles counted after the gather
//    at the layout's block granularity. Backward: dO in, dK/dV back over SCP (reduce-scatter or
//    the reverse uneven exchange), dQ/dK/dV back over HCP.
#include "dsv_plan.hpp"
#include "hybrid_degrees.hpp"

#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <cmath>

namespace cpsim {

std::vector<Json> dsv_variants(const Scenario& sc) {
  std::vector<Json> out;
  for (int h : hybrid::divisors(sc.parallel.cp))
    for (bool aware : {true, false})
      out.push_back(Json{{"hcp", h}, {"scp", sc.parallel.cp / h}, {"sparsity_aware", aware}});
  return out;
}

Schedule generate_dsv(const Scenario& sc, const MaskGeometry& mask) {
  const dsv::Options o = dsv::read_options(sc);
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  const int per = H / G;
  if (w.mask.kind != MaskKind::BLOCK_SPARSE)
    throw UserError("'workload.mask.kind' = \"" + to_string(w.mask.kind) +
                    "\": scheme 'dsv' selects critical KV blocks and needs a block_sparse mask");
  if (G < o.hcp)
    throw UserError("'parallel.hcp' = " + std::to_string(o.hcp) + ": dsv places whole KV-head groups, so hcp must not "
                    "exceed workload.kv_heads (" + std::to_string(G) + ")");
  if (!o.aware && G % o.hcp != 0)
    throw UserError("'parallel.hcp' = " + std::to_string(o.hcp) + ": naive head-wise CP splits heads in order and "
                    "needs workload.kv_heads (" + std::to_string(G) + ") divisible by hcp");
  require_seq_divisible(sc, W, "scheme 'dsv' with cp = " + std::to_string(W));
  const bool bwd = sc.pass == PassKind::FWD_BWD;
  const auto groups = dsv::place_kv_groups(w, mask, o.hcp, o.aware);

  ScheduleBuilder b(sc, mask, "dsv", W);
  const int comp = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm = b.add_stream("comm", StreamKind::COMM);
  auto rank_of = [&](int ih, int is) { return o.hcp_inner ? is * o.hcp + ih : ih * o.scp + is; };
  const int64_t T = w.total_tokens(), c = T / W, cs_all = T / o.scp;

  for (int r = 0; r < W; ++r) {
    const int ih = o.hcp_inner ? r % o.hcp : r / o.scp, is = o.hcp_inner ? r / o.hcp : r % o.scp;
    std::vector<int> hgroup, sgroup;
    for (int j = 0; j < o.hcp; ++j)
      hgroup.push_back(rank_of(j, is));
    for (int j = 0; j < o.scp; ++j)
      sgroup.push_back(rank_of(ih, j));
    const std::vector<int>& kv = groups[size_t(ih)];
    std::vector<int> heads;
    for (int g : kv)
      for (int h = g * per; h < (g + 1) * per; ++h)
        heads.push_back(h);
    const int nq = int(heads.size()), nkv = int(kv.size());

    // token sets: the local part, the SCP chunk, the whole sequences; attention rectangles
    std::vector<TokenSlice> local, chunk, whole;
    std::vector<AttnSegment> segs;
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      const int64_t n = w.seq_lens[s], cs = n / o.scp, cl = n / W;
      chunk.push_back({int(s), {is * cs, (is + 1) * cs}});
      local.push_back({int(s), {is * cs + ih * cl, is * cs + (ih + 1) * cl}});
      whole.push_back({int(s), {0, n}});
      segs.push_back({int(s), {is * cs, (is + 1) * cs}, {0, n}});
    }
    auto buf = [&](std::string name, std::string tensor, int64_t bytes, std::vector<TokenSlice> toks, bool own_heads) {
      Buffer x;
      x.name = std::move(name);
      x.tensor = std::move(tensor);
      x.bytes = bytes;
      x.head_begin = own_heads ? heads.front() : 0;
      x.head_end = own_heads ? heads.back() + 1 : H;
      x.tokens = std::move(toks);
      b.add_buffer(r, x);
    };
    const int64_t row = int64_t(D) * e;
    buf("q", "q", c * H * row, local, false);
    buf("k", "k", c * G * row, local, false);
    buf("v", "v", c * G * row, local, false);
    buf("o", "o", c * H * row, local, false);
    buf("q_h", "q", cs_all * nq * row, chunk, true);
    buf("k_h", "k", cs_all * nkv * row, chunk, true);
    buf("v_h", "v", cs_all * nkv * row, chunk, true);
    buf("o_h", "o", cs_all * nq * row, chunk, true);
    buf("lse_h", "lse", 4 * cs_all * nq, chunk, true);

    // ---- Uneven all-to-all as NCCL's pairwise exchange: in step k = 1..n-1 send to member
    // i+k and receive from member i-k, posted together. Steps run one after another on the comm
    // stream, so an even exchange costs what an ALL_TO_ALL collective costs, and per-peer sizes
    // stay exact. out(j), in(j): bytes to and from member j.
    auto pairwise = [&](const std::vector<int>& grp_ranks, int me, int t, std::vector<int> deps, const auto& out_b,
                        const auto& in_b, const std::string& label, const std::string& src, const std::string& dst) {
      const int n = int(grp_ranks.size());
      int last = -1;
      for (int k = 1; k < n; ++k) {
        const int to = (me + k) % n, from = (me - k + n) % n, grp = b.next_group(r);
        b.send(r, comm, deps, grp_ranks[size_t(to)], out_b(to), p2p_tag(t, k), grp, label + " send", src);
        last = b.recv(r, comm, deps, grp_ranks[size_t(from)], in_b(from), p2p_tag(t, k), grp, label + " recv", dst);
      }
      return last;
    };

    // ---- HCP exchange of one tensor: `q_heads` says whether it has query or KV heads; `in`
    // turns tokens x all heads into chunk x own heads, else back.
    int tag = 0;
    auto hcp_a2a = [&](const std::string& what, bool q_heads, bool in, std::vector<int> deps, const std::string& src,
                       const std::string& dst) {
      const int t = tag++;
      if (o.hcp == 1)
        return -1;
      const int64_t unit = c * row * (q_heads ? per : 1); // one KV group's worth of one token part
      if (!o.aware) { // even: every member has G/hcp groups
        const int64_t bytes = c * row * (q_heads ? H : G);
        // collective tags are unique per group: kind x SCP index of the group
        return b.collective(r, comm, deps, CollectiveKind::ALL_TO_ALL, hgroup, bytes, 10000 + 1000 * t + is,
                            "hcp a2a " + what, {src}, {dst});
      }
      // in: send my token part of the peer's heads, receive the peer's token part of my heads
      auto theirs = [&](int j) { return unit * int64_t(groups[size_t(j)].size()); };
      auto mine = [&](int) { return unit * int64_t(kv.size()); };
      return in ? pairwise(hgroup, ih, t, deps, theirs, mine, "hcp a2a " + what, src, dst)
                : pairwise(hgroup, ih, t, deps, mine, theirs, "hcp a2a " + what, src, dst);
    };
    // buffers an exchange fills are live from its first op (pairwise exchanges are several)
    const int hcp_in_first = o.hcp == 1 ? 0 : b.last_op(r) + 1;
    int aq = hcp_a2a("q", true, true, {}, "q", "q_h");
    hcp_a2a("k", false, true, {}, "k", "k_h");
    int av = hcp_a2a("v", false, true, {}, "v", "v_h");

    // ---- predictor: projections, K_lr all-gather over SCP, rank-r scores of proxies, top-k
    const int64_t lr = o.rank_lr;
    int64_t score_flops = 0, score_bytes = 0, topk_flops = 0, index_bytes = 0;
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      const int64_t n = w.seq_lens[s], cs = n / o.scp, p = (cs + o.query_group - 1) / o.query_group;
      score_flops += 2 * p * n * lr * nq;
      // each proxy tile of tile_m rows streams every key's K_lr once
      score_bytes += ((p + sc.tile_m - 1) / sc.tile_m) * n * lr * e * nq + p * lr * e * nq;
      for (int h : heads) {
        const double k_mean = double(mask.cells(int(s), h, segs[s].q, segs[s].k)) / double(cs);
        topk_flops += p * n * dsv::log2_ceil(k_mean); // bitonic select: ~log2(k) compares a score
        index_bytes += 4 * p * int64_t(std::ceil(k_mean));
      }
    }
    buf("q_lr", "staging", cs_all * nq * lr * e, chunk, true);
    buf("k_lr", "staging", T * nkv * lr * e, whole, true);
    buf("kv_index", "staging", index_bytes, chunk, true);
    int proj = b.compute(r, comp, {av}, ComputeKind::LOWRANK_QK, 2 * cs_all * D * lr * (nq + nkv),
                         cs_all * (nq + nkv) * (row + lr * e), "predictor project q_lr k_lr", {"q_h", "k_h"},
                         {"q_lr", "k_lr"});
    // SCP collective tags: 100000 + 1000 x kind + the group's head-set index
    auto scp_tag = [&](int kind) { return 100000 + 1000 * kind + ih; };
    int klr = b.collective(r, comm, {proj}, CollectiveKind::ALL_GATHER, sgroup, cs_all * nkv * lr * e, scp_tag(0),
                           "predictor ag k_lr", {"k_lr"}, {"k_lr"});
    int score = b.compute(r, comp, {proj, klr}, ComputeKind::LOWRANK_QK, score_flops, score_bytes,
                          "predictor scores q_lr k_lr^T", {"q_lr", "k_lr"}, {"kv_index"});
    int topk = b.compute(r, comp, {score}, ComputeKind::TOPK, topk_flops, index_bytes, "predictor top-k", {"kv_index"},
                         {"kv_index"});
    b.set_alloc(r, "q_lr", proj);
    b.set_alloc(r, "k_lr", proj);
    b.set_free(r, "q_lr", topk);
    b.set_free(r, "k_lr", topk);
    b.set_alloc(r, "kv_index", score);

    // ---- SCP: the K and V rows of the other chunks, all of them (naive) or the needed ones
    std::vector<int64_t> need(size_t(o.scp), 0);     // tokens I need from each chunk (all KV groups)
    std::vector<int64_t> give(size_t(o.scp), 0);     // tokens each chunk's queries need from mine
    if (o.aware && o.scp > 1)
      for (size_t s = 0; s < w.seq_lens.size(); ++s) {
        const int64_t cs = w.seq_lens[s] / o.scp;
        auto mine = dsv::needed_from_chunks(mask, w, int(s), segs[s].q, kv, o.scp);
        for (int j = 0; j < o.scp; ++j) {
          need[size_t(j)] += mine[size_t(j)];
          auto theirs = dsv::needed_from_chunks(mask, w, int(s), TokenRange{j * cs, (j + 1) * cs}, kv, o.scp);
          give[size_t(j)] += theirs[size_t(is)];
        }
      }
    int64_t remote_need = 0;
    for (int j = 0; j < o.scp; ++j)
      remote_need += j == is ? 0 : need[size_t(j)];
    const int64_t kv_rows = o.aware ? cs_all * nkv + remote_need : T * nkv; // rows of K (= of V) after SCP
    if (o.scp > 1) {
      buf("k_scp", "k", kv_rows * row, whole, true);
      buf("v_scp", "v", kv_rows * row, whole, true);
    }
    int scp_k = -1, scp_v = -1, scp_k_first = -1, scp_v_first = -1;
    if (o.scp > 1 && !o.aware) {
      scp_k = b.collective(r, comm, {av}, CollectiveKind::ALL_GATHER, sgroup, cs_all * nkv * row, scp_tag(1), "scp ag k",
                           {"k_h"}, {"k_scp"});
      scp_v = b.collective(r, comm, {av}, CollectiveKind::ALL_GATHER, sgroup, cs_all * nkv * row, scp_tag(2),
                           "scp ag v", {"v_h"}, {"v_scp"});
    } else if (o.scp > 1) {
      // counts, then index triples (to the owner), then K and V rows (from the owner)
      int cnt = b.collective(r, comm, {topk}, CollectiveKind::ALL_TO_ALL, sgroup, 4 * int64_t(o.scp), scp_tag(3),
                             "scp a2a counts", {"kv_index"}, {"kv_index"});
      auto uneven = [&](const std::string& what, int t, std::vector<int> deps, bool to_owner, int64_t unit_bytes,
                        const std::string& src, const std::string& dst) {
        // to_owner: I send my requests to j and receive j's requests of my rows; else the rows
        auto requested = [&](int j) { return unit_bytes * need[size_t(j)]; };
        auto served = [&](int j) { return unit_bytes * give[size_t(j)]; };
        return to_owner ? pairwise(sgroup, is, t, deps, requested, served, "scp a2a " + what, src, dst)
                        : pairwise(sgroup, is, t, deps, served, requested, "scp a2a " + what, src, dst);
      };
      int idx = uneven("index", 201, {cnt}, true, 12, "kv_index", "kv_index");
      scp_k_first = b.last_op(r) + 1;
      scp_k = uneven("k", 202, {idx, av}, false, row, "k_h", "k_scp");
      scp_v_first = b.last_op(r) + 1;
      scp_v = uneven("v", 203, {idx, av}, false, row, "v_h", "v_scp");
    }
    const std::string k_in = o.scp > 1 ? "k_scp" : "k_h", v_in = o.scp > 1 ? "v_scp" : "v_h";
    int a = b.attention_on_heads(r, comp, {aq, av, topk, scp_k, scp_v}, Direction::FORWARD, heads, segs,
                                 "fwd sparse attn", {"q_h", k_in, v_in, "kv_index"}, {"o_h", "lse_h"});
    if (a >= 0)
      b.gather_tiles(r, a, w.mask.block);
    int ao = hcp_a2a("o", true, false, {a}, "o_h", "o");
    for (const char* n : {"q_h", "k_h", "v_h", "o_h", "lse_h"})
      b.set_alloc(r, n, hcp_in_first);
    std::vector<std::string> scp_bufs; // the gathered K, V (and their gradients) exist only with scp > 1
    if (o.scp > 1) {
      b.set_alloc(r, "k_scp", scp_k_first >= 0 ? scp_k_first : scp_k);
      b.set_alloc(r, "v_scp", scp_v_first >= 0 ? scp_v_first : scp_v);
      scp_bufs = {"k_scp", "v_scp"};
    }
    const int fwd_end = b.last_op(r);
    if (!bwd) {
      for (const char* n : {"q_h", "k_h", "v_h", "o_h", "lse_h", "kv_index"})
        b.set_free(r, n, std::max(fwd_end, ao));
      for (const auto& n : scp_bufs)
        b.set_free(r, n, fwd_end);
      continue;
    }
    // ---- backward: dO over HCP, sparse backward, dK/dV back over SCP, dQ/dK/dV back over HCP
    buf("do", "do", c * H * row, local, false);
    buf("dq", "dq", c * H * row, local, false);
    buf("dk", "dk", c * G * row, local, false);
    buf("dv", "dv", c * G * row, local, false);
    buf("do_h", "do", cs_all * nq * row, chunk, true);
    buf("dq_h", "dq", cs_all * nq * row, chunk, true);
    buf("dk_h", "dk", cs_all * nkv * row, chunk, true);
    buf("dv_h", "dv", cs_all * nkv * row, chunk, true);
    if (o.scp > 1) {
      buf("dk_scp", "dk", kv_rows * row, whole, true);
      buf("dv_scp", "dv", kv_rows * row, whole, true);
    }
    const int do_first = b.last_op(r) + 1;
    int ado = hcp_a2a("do", true, true, {ao}, "do", "do_h");
    int ab = b.attention_on_heads(r, comp, {ado, fwd_end}, Direction::BACKWARD, heads, segs, "bwd sparse attn",
                                  {"q_h", k_in, v_in, "o_h", "lse_h", "do_h", "kv_index"},
                                  {"dq_h", o.scp > 1 ? "dk_scp" : "dk_h", o.scp > 1 ? "dv_scp" : "dv_h"});
    if (ab >= 0)
      b.gather_tiles(r, ab, w.mask.block);
    int rk = -1, rv = -1;
    if (o.scp > 1 && !o.aware) {
      rk = b.collective(r, comm, {ab}, CollectiveKind::REDUCE_SCATTER, sgroup, cs_all * nkv * row, scp_tag(4),
                        "scp rs dk", {"dk_scp"}, {"dk_h"});
      rv = b.collective(r, comm, {ab}, CollectiveKind::REDUCE_SCATTER, sgroup, cs_all * nkv * row, scp_tag(5),
                        "scp rs dv", {"dv_scp"}, {"dv_h"});
    } else if (o.scp > 1) { // the reverse of the K/V exchange: gradients go home to the owner
      auto requested = [&](int j) { return row * need[size_t(j)]; };
      auto served = [&](int j) { return row * give[size_t(j)]; };
      rk = pairwise(sgroup, is, 212, {ab}, requested, served, "scp a2a dk", "dk_scp", "dk_h");
      rv = pairwise(sgroup, is, 213, {ab}, requested, served, "scp a2a dv", "dv_scp", "dv_h");
    }
    hcp_a2a("dq", true, false, {ab}, "dq_h", "dq");
    hcp_a2a("dk", false, false, {ab, rk}, "dk_h", "dk");
    int adv = hcp_a2a("dv", false, false, {ab, rv}, "dv_h", "dv");
    const int end = std::max(b.last_op(r), adv);
    if (o.scp > 1)
      scp_bufs.insert(scp_bufs.end(), {"dk_scp", "dv_scp"});
    for (const char* n : {"q_h", "k_h", "v_h", "o_h", "lse_h", "kv_index", "do_h", "dq_h", "dk_h", "dv_h"})
      b.set_free(r, n, end);
    for (const auto& n : scp_bufs)
      b.set_free(r, n, end);
    b.set_alloc(r, "do_h", ado < 0 ? fwd_end : do_first);
    for (const char* n : {"dq_h", "dk_h", "dv_h"})
      b.set_alloc(r, n, std::max(ado, fwd_end));
    if (o.scp > 1)
      for (const char* n : {"dk_scp", "dv_scp"})
        b.set_alloc(r, n, std::max(ado, fwd_end));
  }
  return b.finish();
}

} // namespace cpsim
