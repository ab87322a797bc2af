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

namespace {

/** A buffer of `heads` (global ids, ascending; a list where they are not consecutive). */
Buffer make_buffer(std::string name, std::string tensor, int64_t bytes, std::vector<TokenSlice> tokens,
                   const std::vector<int>& heads, std::string dtype = {}) {
  Buffer x;
  x.name = std::move(name);
  x.tensor = std::move(tensor);
  x.bytes = bytes;
  x.tokens = std::move(tokens);
  x.head_begin = heads.front();
  x.head_end = heads.back() + 1;
  if (x.head_end - x.head_begin != int(heads.size()))
    x.head_ids = heads;
  x.dtype = std::move(dtype);
  return x;
}

std::vector<int> range_list(int a, int b) {
  std::vector<int> v;
  for (int x = a; x < b; ++x)
    v.push_back(x);
  return v;
}

int64_t tokens_of(const std::vector<TokenSlice>& v) {
  int64_t n = 0;
  for (const auto& t : v)
    n += t.range.size();
  return n;
}

} // namespace

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
  auto heads_of_groups = [&](const std::vector<int>& kv) {
    std::vector<int> h;
    for (int g : kv)
      for (int x = g * per; x < (g + 1) * per; ++x)
        h.push_back(x);
    return h;
  };

  ScheduleBuilder b(sc, mask, "dsv", W);
  const int comp = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm = b.add_stream("comm", StreamKind::COMM);
  auto rank_of = [&](int ih, int is) { return o.hcp_inner ? is * o.hcp + ih : ih * o.scp + is; };
  const int64_t T = w.total_tokens(), c = T / W, cs_all = T / o.scp;
  const int64_t row = int64_t(D) * e; // one row of one head

  for (int r = 0; r < W; ++r) {
    const int ih = o.hcp_inner ? r % o.hcp : r / o.scp, is = o.hcp_inner ? r / o.hcp : r % o.scp;
    std::vector<int> hgroup, sgroup;
    for (int j = 0; j < o.hcp; ++j)
      hgroup.push_back(rank_of(j, is));
    for (int j = 0; j < o.scp; ++j)
      sgroup.push_back(rank_of(ih, j));
    const std::vector<int>& kv = groups[size_t(ih)];
    const std::vector<int> heads = heads_of_groups(kv), all_q = range_list(0, H), all_kv = range_list(0, G);
    const int nq = int(heads.size()), nkv = int(kv.size());

    // token sets: the local part, the SCP chunk, the whole sequences; a member's local part of my chunk
    std::vector<TokenSlice> local, chunk, whole;
    std::vector<AttnSegment> segs;
    auto local_of = [&](int member) {
      std::vector<TokenSlice> t;
      for (size_t s = 0; s < w.seq_lens.size(); ++s) {
        const int64_t n = w.seq_lens[s], cs = n / o.scp, cl = n / W;
        t.push_back({int(s), {is * cs + member * cl, is * cs + (member + 1) * cl}});
      }
      return t;
    };
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      const int64_t n = w.seq_lens[s], cs = n / o.scp;
      chunk.push_back({int(s), {is * cs, (is + 1) * cs}});
      whole.push_back({int(s), {0, n}});
      segs.push_back({int(s), {is * cs, (is + 1) * cs}, {0, n}});
    }
    local = local_of(ih);
    auto add = [&](Buffer x) { b.add_buffer(r, std::move(x)); };
    add(make_buffer("q", "q", c * H * row, local, all_q));
    add(make_buffer("k", "k", c * G * row, local, all_kv));
    add(make_buffer("v", "v", c * G * row, local, all_kv));
    add(make_buffer("o", "o", c * H * row, local, all_q));
    // head-sharded buffers: the SCP chunk x the rank's heads; with hcp = 1 the local part is the chunk
    const bool sharded = o.hcp > 1;
    const std::string qn = sharded ? "q_h" : "q", kn = sharded ? "k_h" : "k", vn = sharded ? "v_h" : "v",
                      on = sharded ? "o_h" : "o", ln = sharded ? "lse_h" : "lse";
    if (sharded) {
      add(make_buffer("q_h", "q", cs_all * nq * row, chunk, heads));
      add(make_buffer("k_h", "k", cs_all * nkv * row, chunk, kv));
      add(make_buffer("v_h", "v", cs_all * nkv * row, chunk, kv));
      add(make_buffer("o_h", "o", cs_all * nq * row, chunk, heads));
    }
    add(make_buffer(ln, "lse", 4 * cs_all * nq, chunk, heads));

    // ---- Uneven all-to-all as NCCL's pairwise exchange: in step k = 1..n-1 send to member
    // i+k and receive from member i-k, posted together. Steps run one after another on the comm
    // stream, so an even exchange costs what an ALL_TO_ALL collective costs, and per-peer sizes
    // stay exact. The messages name their regions: what goes to (comes from) member j.
    using Regions = std::vector<BufferRegion>;
    auto pairwise = [&](const std::vector<int>& grp_ranks, int me, int t, std::vector<int> deps, const auto& out_r,
                        const auto& in_r, const std::string& label, const std::string& src, const std::string& dst) {
      const int n = int(grp_ranks.size());
      int last = -1;
      auto bytes = [&](const Regions& rs) {
        int64_t sum = 0;
        for (const auto& g : rs)
          sum += region_bytes(b.buffer(r, g.buffer), g);
        return sum;
      };
      for (int k = 1; k < n; ++k) {
        const int to = (me + k) % n, from = (me - k + n) % n, grp = b.next_group(r);
        const Regions ro = out_r(to), ri = in_r(from);
        const int sid = b.send(r, comm, deps, grp_ranks[size_t(to)], bytes(ro), p2p_tag(t, k), grp, label + " send", src);
        last = b.recv(r, comm, deps, grp_ranks[size_t(from)], bytes(ri), p2p_tag(t, k), grp, label + " recv", dst);
        b.set_regions(r, sid, ro);
        b.set_regions(r, last, ri);
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
      if (!o.aware) { // even: every member has G/hcp groups
        const int64_t bytes = c * row * (q_heads ? H : G);
        // collective tags are unique per group: kind x SCP index of the group
        return b.collective(r, comm, deps, CollectiveKind::ALL_TO_ALL, hgroup, bytes, 10000 + 1000 * t + is,
                            "hcp a2a " + what, {src}, {dst});
      }
      auto member_heads = [&](int j) { return q_heads ? heads_of_groups(groups[size_t(j)]) : groups[size_t(j)]; };
      // in: my local part of member j's heads goes to j, j's local part of my heads comes from j; out: the reverse
      auto to_j = [&](int j) { return in ? Regions{{src, {}, member_heads(j)}} : Regions{{src, local_of(j), {}}}; };
      auto from_j = [&](int j) { return in ? Regions{{dst, local_of(j), {}}} : Regions{{dst, {}, member_heads(j)}}; };
      // the own part (my tokens of my heads) stays: copied on the device, as NCCL's all-to-all copies its step 0
      int64_t own = 0;
      for (const auto& g : to_j(ih))
        own += region_bytes(b.buffer(r, g.buffer), g);
      b.compute(r, comp, deps, ComputeKind::COPY, 0, 2 * own, "hcp own " + what, {src}, {dst});
      return pairwise(hgroup, ih, t, deps, to_j, from_j, "hcp a2a " + what, src, dst);
    };
    // buffers an exchange fills are live from its first op (pairwise exchanges are several)
    const int hcp_in_first = b.last_op(r) + 1;
    int aq = hcp_a2a("q", true, true, {}, "q", qn);
    hcp_a2a("k", false, true, {}, "k", kn);
    int av = hcp_a2a("v", false, true, {}, "v", vn);

    // ---- what sparse SCP will move: per KV group, the key tokens of each chunk my queries need and
    // the tokens of my chunk each member's queries need
    // needed[g][j]: keys of chunk j KV group g's queries (mine) need; wanted[g][j]: keys of my chunk member j's need
    std::vector<std::vector<std::vector<TokenSlice>>> needed(static_cast<size_t>(nkv)), wanted(static_cast<size_t>(nkv));
    std::vector<int64_t> need(size_t(o.scp), 0), give(size_t(o.scp), 0);
    const bool sparse_scp = o.aware && o.scp > 1;
    if (sparse_scp)
      for (int gi = 0; gi < nkv; ++gi) {
        needed[size_t(gi)].resize(size_t(o.scp));
        wanted[size_t(gi)].resize(size_t(o.scp));
        for (size_t s = 0; s < w.seq_lens.size(); ++s) {
          const int64_t cs = w.seq_lens[s] / o.scp;
          for (int j = 0; j < o.scp; ++j) {
            for (const TokenSlice& t : dsv::needed_keys(mask, w, int(s), segs[s].q, kv[size_t(gi)], o.scp, j))
              needed[size_t(gi)][size_t(j)].push_back(t);
            for (const TokenSlice& t : dsv::needed_keys(mask, w, int(s), {j * cs, (j + 1) * cs}, kv[size_t(gi)], o.scp, is))
              wanted[size_t(gi)][size_t(j)].push_back(t);
          }
        }
        for (int j = 0; j < o.scp; ++j) {
          need[size_t(j)] += tokens_of(needed[size_t(gi)][size_t(j)]);
          give[size_t(j)] += tokens_of(wanted[size_t(gi)][size_t(j)]);
        }
      }
    if (sparse_scp) { // counts (int32 per member) and index triples (12 bytes a needed token), per exchange step
      int64_t max_need = 1, max_give = 1;
      for (int j = 0; j < o.scp; ++j) {
        max_need = std::max(max_need, need[size_t(j)]);
        max_give = std::max(max_give, give[size_t(j)]);
      }
      add(make_buffer("scp_counts", "staging", 4 * o.scp, {}, kv, "int32"));
      add(make_buffer("scp_counts_in", "staging", 4 * o.scp, {}, kv, "int32"));
      add(make_buffer("scp_requests_out", "staging", 12 * max_need, {}, kv, "int32"));
      add(make_buffer("scp_requests_in", "staging", 12 * max_give, {}, kv, "int32"));
    }

    // ---- predictor: projections, K_lr all-gather over SCP, rank-r scores of proxies (a threshold per proxy:
    // the k-th largest estimate), then top-k (the keys above it, as int32 indices)
    const int64_t lr = o.rank_lr;
    int64_t score_flops = 0, score_bytes = 0, proxies = 0, index_bytes = 0, select_flops = 0;
    std::vector<int64_t> keep; // per sequence, per head of the rank
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      const int64_t n = w.seq_lens[s], cs = n / o.scp, p = (cs + o.query_group - 1) / o.query_group;
      proxies += p;
      score_flops += 2 * p * n * lr * nq;
      // each tile of kProxyTile proxies streams every key's K_lr once (what one thread block of the kernel shares)
      score_bytes += ((p + dsv::kProxyTile - 1) / dsv::kProxyTile) * n * lr * e * nq + p * lr * e * nq;
      for (int h : heads) {
        const double k_mean = double(mask.cells(int(s), h, segs[s].q, segs[s].k)) / double(cs);
        keep.push_back(int64_t(std::ceil(k_mean)));
        index_bytes += 4 * p * keep.back();
        select_flops += p * n; // one compare of each recomputed estimate with the proxy's threshold
      }
    }
    const bool ag_lr = o.scp > 1;
    add(make_buffer("q_lr", "q_lr", cs_all * nq * lr * e, chunk, heads, "bf16"));
    add(make_buffer("k_lr", "k_lr", T * nkv * lr * e, whole, kv, "bf16"));
    if (ag_lr)
      add(make_buffer("k_lr_own", "k_lr", cs_all * nkv * lr * e, chunk, kv, "bf16"));
    // per proxy: the histogram bin of its k-th largest estimate and how many estimates lie above that bin
    add(make_buffer("lr_threshold", "staging", 8 * proxies * nq, {}, heads, "int32"));
    add(make_buffer("kv_index", "index", index_bytes, {}, heads, "int32"));
    int proj = b.compute(r, comp, {av}, ComputeKind::LOWRANK_QK, 2 * cs_all * D * lr * (nq + nkv),
                         cs_all * (nq + nkv) * (row + lr * e), "predictor project q_lr k_lr", {qn, kn},
                         {"q_lr", ag_lr ? "k_lr_own" : "k_lr"});
    // SCP collective tags: 100000 + 1000 x kind + the group's head-set index
    auto scp_tag = [&](int kind) { return 100000 + 1000 * kind + ih; };
    int klr = b.collective(r, comm, {proj}, CollectiveKind::ALL_GATHER, sgroup, cs_all * nkv * lr * e, scp_tag(0),
                           "predictor ag k_lr", {"k_lr_own"}, {"k_lr"});
    int score = b.compute(r, comp, {proj, klr}, ComputeKind::LOWRANK_QK, score_flops, score_bytes + 8 * proxies * nq,
                          "predictor scores q_lr k_lr^T", {"q_lr", "k_lr"}, {"lr_threshold"});
    // the selection recomputes each estimate (DSV's two-pass top-k for large k): the score FLOPs again, plus compares
    // with sparse SCP the selection also decides what to ask each SCP member for: counts and index triples
    std::vector<std::string> topk_writes = {"kv_index"};
    if (sparse_scp)
      topk_writes.insert(topk_writes.end(), {"scp_counts", "scp_requests_out"});
    int topk = b.compute(r, comp, {score}, ComputeKind::TOPK, score_flops + select_flops,
                         score_bytes + 8 * proxies * nq + index_bytes, "predictor top-k", {"q_lr", "k_lr", "lr_threshold"},
                         topk_writes);
    b.set_predictor(r, score, o.query_group, keep);
    b.set_predictor(r, topk, o.query_group, keep);
    b.set_alloc(r, "q_lr", proj);
    b.set_alloc(r, ag_lr ? "k_lr_own" : "k_lr", proj);
    if (ag_lr) {
      b.set_alloc(r, "k_lr", klr);
      b.set_free(r, "k_lr_own", klr);
    }
    b.set_free(r, "q_lr", topk);
    b.set_free(r, "k_lr", topk);
    b.set_alloc(r, "lr_threshold", score);
    b.set_free(r, "lr_threshold", topk);
    b.set_alloc(r, "kv_index", topk);

    // ---- SCP: the K and V rows of the other chunks, all of them (naive) or the needed ones
    auto kv_scp = [&](const std::string& t, int gi) { return t + "_scp_g" + std::to_string(kv[size_t(gi)]); };
    std::vector<std::string> k_in, v_in, dk_out, dv_out;
    if (o.scp == 1) {
      k_in = {kn};
      v_in = {vn};
    } else if (!o.aware) {
      add(make_buffer("k_scp", "k", T * nkv * row, whole, kv));
      add(make_buffer("v_scp", "v", T * nkv * row, whole, kv));
      k_in = {"k_scp"};
      v_in = {"v_scp"};
    } else {
      // one gathered K (and V) buffer per KV group: its own chunk plus the blocks its queries need elsewhere
      for (int gi = 0; gi < nkv; ++gi) {
        std::vector<TokenSlice> held;
        for (int j = 0; j < o.scp; ++j)
          if (j == is)
            held.insert(held.end(), chunk.begin(), chunk.end());
          else
            held.insert(held.end(), needed[size_t(gi)][size_t(j)].begin(), needed[size_t(gi)][size_t(j)].end());
        std::stable_sort(held.begin(), held.end(), [](const TokenSlice& a, const TokenSlice& x) {
          return std::tie(a.seq, a.range.begin) < std::tie(x.seq, x.range.begin);
        });
        for (const char* t : {"k", "v"}) {
          add(make_buffer(kv_scp(t, gi), t, tokens_of(held) * row, held, {kv[size_t(gi)]}));
          (std::string(t) == "k" ? k_in : v_in).push_back(kv_scp(t, gi));
        }
      }
    }
    int scp_k = -1, scp_v = -1, scp_first = -1, own_copy = -1;
    if (o.scp > 1 && !o.aware) {
      scp_k = b.collective(r, comm, {av}, CollectiveKind::ALL_GATHER, sgroup, cs_all * nkv * row, scp_tag(1), "scp ag k",
                           {kn}, {"k_scp"});
      scp_v = b.collective(r, comm, {av}, CollectiveKind::ALL_GATHER, sgroup, cs_all * nkv * row, scp_tag(2),
                           "scp ag v", {vn}, {"v_scp"});
      scp_first = scp_k;
    } else if (sparse_scp) {
      // counts (int32 per peer), index triples (12 bytes a needed token, to its owner), then the K, V rows
      scp_first = b.last_op(r) + 1;
      int cnt = -1, idx = -1;
      {
        const int n = o.scp;
        for (int k = 1; k < n; ++k) { // counts: 4 bytes each way per step
          const int to = (is + k) % n, from = (is - k + n) % n, grp = b.next_group(r);
          b.send(r, comm, {topk}, sgroup[size_t(to)], 4, p2p_tag(200, k), grp, "scp a2a counts send", "scp_counts");
          cnt = b.recv(r, comm, {topk}, sgroup[size_t(from)], 4, p2p_tag(200, k), grp, "scp a2a counts recv", "scp_counts_in");
        }
        for (int k = 1; k < n; ++k) { // requests: my needed tokens of chunk j, to j; j's needs of my chunk, from j
          const int to = (is + k) % n, from = (is - k + n) % n, grp = b.next_group(r);
          b.send(r, comm, {cnt}, sgroup[size_t(to)], 12 * need[size_t(to)], p2p_tag(201, k), grp, "scp a2a index send",
                 "scp_requests_out");
          idx = b.recv(r, comm, {cnt}, sgroup[size_t(from)], 12 * give[size_t(from)], p2p_tag(201, k), grp,
                       "scp a2a index recv", "scp_requests_in");
        }
      }
      // the rows of my chunk member j's queries need, from my head-sharded K (V); into my per-group buffers
      auto rows_to = [&](const std::string& src) {
        return [&, src](int j) {
          Regions rs;
          for (int gi = 0; gi < nkv; ++gi)
            if (!wanted[size_t(gi)][size_t(j)].empty())
              rs.push_back({src, wanted[size_t(gi)][size_t(j)], {kv[size_t(gi)]}});
          return rs;
        };
      };
      auto rows_from = [&](const std::string& t) {
        return [&, t](int j) {
          Regions rs;
          for (int gi = 0; gi < nkv; ++gi)
            if (!needed[size_t(gi)][size_t(j)].empty())
              rs.push_back({kv_scp(t, gi), needed[size_t(gi)][size_t(j)], {}});
          return rs;
        };
      };
      scp_k = pairwise(sgroup, is, 202, {idx, av}, rows_to(kn), rows_from("k"), "scp a2a k", kn, k_in[0]);
      scp_v = pairwise(sgroup, is, 203, {idx, av}, rows_to(vn), rows_from("v"), "scp a2a v", vn, v_in[0]);
      // the own chunk's rows into the per-group buffers (DSV scatters local and received keys into gathered_K)
      std::vector<std::string> both = k_in;
      both.insert(both.end(), v_in.begin(), v_in.end());
      own_copy = b.compute(r, comp, {av}, ComputeKind::COPY, 0, 2 * 2 * cs_all * nkv * row, "scp copy own k v",
                           {kn, vn}, both);
    }
    std::vector<std::string> attn_reads = {qn};
    attn_reads.insert(attn_reads.end(), k_in.begin(), k_in.end());
    attn_reads.insert(attn_reads.end(), v_in.begin(), v_in.end());
    attn_reads.push_back("kv_index");
    int a = b.attention_on_heads(r, comp, {aq, av, topk, scp_k, scp_v, own_copy}, Direction::FORWARD, heads, segs,
                                 "fwd sparse attn", attn_reads, {on, ln});
    if (a >= 0)
      b.gather_tiles(r, a, w.mask.block);
    int ao = hcp_a2a("o", true, false, {a}, on, "o");
    if (sharded)
      for (const std::string& n : {qn, kn, vn, on})
        b.set_alloc(r, n, hcp_in_first);
    b.set_alloc(r, ln, a);
    std::vector<std::string> scp_bufs; // the gathered K, V (and their gradients) exist only with scp > 1
    if (o.scp > 1) {
      scp_bufs = k_in;
      scp_bufs.insert(scp_bufs.end(), v_in.begin(), v_in.end());
      for (const auto& n : scp_bufs)
        b.set_alloc(r, n, scp_first);
    }
    if (sparse_scp) {
      for (const char* n : {"scp_counts", "scp_requests_out"})
        b.set_alloc(r, n, topk);
      b.set_alloc(r, "scp_requests_in", scp_first);
      b.set_alloc(r, "scp_counts_in", scp_first);
      for (const char* n : {"scp_counts", "scp_counts_in", "scp_requests_out", "scp_requests_in"})
        b.set_free(r, n, std::max(scp_k, scp_v));
    }
    const int fwd_end = b.last_op(r);
    std::vector<std::string> sharded_fwd;
    if (sharded)
      sharded_fwd = {qn, kn, vn, on};
    if (!bwd) {
      for (const auto& n : sharded_fwd)
        b.set_free(r, n, std::max(fwd_end, ao));
      for (const std::string& n : {ln, std::string("kv_index")})
        b.set_free(r, n, std::max(fwd_end, ao));
      for (const auto& n : scp_bufs)
        b.set_free(r, n, fwd_end);
      continue;
    }
    // ---- backward: dO over HCP, sparse backward, dK/dV back over SCP, dQ/dK/dV back over HCP
    add(make_buffer("do", "do", c * H * row, local, all_q));
    add(make_buffer("dq", "dq", c * H * row, local, all_q));
    add(make_buffer("dk", "dk", c * G * row, local, all_kv));
    add(make_buffer("dv", "dv", c * G * row, local, all_kv));
    const std::string don = sharded ? "do_h" : "do", dqn = sharded ? "dq_h" : "dq", dkn = sharded ? "dk_h" : "dk",
                      dvn = sharded ? "dv_h" : "dv";
    if (sharded) {
      add(make_buffer("do_h", "do", cs_all * nq * row, chunk, heads));
      add(make_buffer("dq_h", "dq", cs_all * nq * row, chunk, heads));
      add(make_buffer("dk_h", "dk", cs_all * nkv * row, chunk, kv));
      add(make_buffer("dv_h", "dv", cs_all * nkv * row, chunk, kv));
    }
    if (o.scp == 1) {
      dk_out = {dkn};
      dv_out = {dvn};
    } else if (!o.aware) {
      add(make_buffer("dk_scp", "dk", T * nkv * row, whole, kv));
      add(make_buffer("dv_scp", "dv", T * nkv * row, whole, kv));
      dk_out = {"dk_scp"};
      dv_out = {"dv_scp"};
    } else {
      for (int gi = 0; gi < nkv; ++gi) {
        const Buffer kb = b.buffer(r, k_in[size_t(gi)]); // a copy: adding buffers moves them
        for (const char* t : {"dk", "dv"}) {
          add(make_buffer(kv_scp(t, gi), t, kb.bytes, kb.tokens, {kv[size_t(gi)]}));
          (std::string(t) == "dk" ? dk_out : dv_out).push_back(kv_scp(t, gi));
        }
      }
    }
    const int do_first = b.last_op(r) + 1;
    int ado = hcp_a2a("do", true, true, {ao}, "do", don);
    std::vector<std::string> bwd_reads = attn_reads;
    bwd_reads.insert(bwd_reads.end(), {on, ln, don});
    std::vector<std::string> bwd_writes = {dqn};
    bwd_writes.insert(bwd_writes.end(), dk_out.begin(), dk_out.end());
    bwd_writes.insert(bwd_writes.end(), dv_out.begin(), dv_out.end());
    int ab = b.attention_on_heads(r, comp, {ado, fwd_end}, Direction::BACKWARD, heads, segs, "bwd sparse attn",
                                  bwd_reads, bwd_writes);
    if (ab >= 0)
      b.gather_tiles(r, ab, w.mask.block);
    int rk = -1, rv = -1;
    std::vector<std::string> grads_in; // partial dK, dV of my chunk received from the SCP members
    if (o.scp > 1 && !o.aware) {
      rk = b.collective(r, comm, {ab}, CollectiveKind::REDUCE_SCATTER, sgroup, cs_all * nkv * row, scp_tag(4),
                        "scp rs dk", {"dk_scp"}, {dkn});
      rv = b.collective(r, comm, {ab}, CollectiveKind::REDUCE_SCATTER, sgroup, cs_all * nkv * row, scp_tag(5),
                        "scp rs dv", {"dv_scp"}, {dvn});
    } else if (sparse_scp) {
      // the reverse of the K/V exchange: the rows I gathered from member j go back to j as partial gradients, and the
      // partials of my chunk come from every member, into one buffer per (member, group), summed into mine below
      auto grad_in = [&](const std::string& t, int j, int gi) {
        return t + "_from" + std::to_string(sgroup[size_t(j)]) + "_g" + std::to_string(kv[size_t(gi)]);
      };
      for (int j = 0; j < o.scp; ++j)
        for (int gi = 0; gi < nkv && j != is; ++gi)
          if (!wanted[size_t(gi)][size_t(j)].empty())
            for (const char* t : {"dk", "dv"}) {
              add(make_buffer(grad_in(t, j, gi), t, tokens_of(wanted[size_t(gi)][size_t(j)]) * row,
                              wanted[size_t(gi)][size_t(j)], {kv[size_t(gi)]}));
              grads_in.push_back(grad_in(t, j, gi));
            }
      auto back_to = [&](const std::string& t) {
        return [&, t](int j) {
          Regions rs;
          for (int gi = 0; gi < nkv; ++gi)
            if (!needed[size_t(gi)][size_t(j)].empty())
              rs.push_back({kv_scp(t, gi), needed[size_t(gi)][size_t(j)], {}});
          return rs;
        };
      };
      auto back_from = [&](const std::string& t) {
        return [&, t](int j) {
          Regions rs;
          for (int gi = 0; gi < nkv; ++gi)
            if (!wanted[size_t(gi)][size_t(j)].empty())
              rs.push_back({grad_in(t, j, gi), {}, {}});
          return rs;
        };
      };
      const int first = b.last_op(r) + 1;
      int pk = pairwise(sgroup, is, 212, {ab}, back_to("dk"), back_from("dk"), "scp a2a dk", dk_out[0], dkn);
      int pv = pairwise(sgroup, is, 213, {ab}, back_to("dv"), back_from("dv"), "scp a2a dv", dv_out[0], dvn);
      for (const auto& n : grads_in)
        b.set_alloc(r, n, first);
      // my chunk's dK (dV) = my own partial rows + every member's, added in place by token
      auto sum = [&](const std::string& t, int after, const std::vector<std::string>& own) {
        std::vector<std::string> reads = {t == "dk" ? dkn : dvn};
        reads.insert(reads.end(), own.begin(), own.end());
        int64_t rows = cs_all * nkv;
        for (const auto& n : grads_in)
          if (n.rfind(t + "_from", 0) == 0) {
            reads.push_back(n);
            rows += b.buffer(r, n).bytes / row;
          }
        return b.merge(r, comp, {ab, after}, Direction::BACKWARD, heads.front(), heads.back() + 1, cs_all, int(reads.size()) - 1,
                       rows * row, "scp sum " + t, reads, {t == "dk" ? dkn : dvn});
      };
      rk = sum("dk", pk, dk_out);
      rv = sum("dv", pv, dv_out);
    }
    hcp_a2a("dq", true, false, {ab}, dqn, "dq");
    hcp_a2a("dk", false, false, {ab, rk}, dkn, "dk");
    int adv = hcp_a2a("dv", false, false, {ab, rv}, dvn, "dv");
    const int end = std::max(b.last_op(r), adv);
    for (const auto& n : sharded_fwd)
      b.set_free(r, n, end);
    for (const std::string& n : {ln, std::string("kv_index")})
      b.set_free(r, n, end);
    if (sharded) {
      for (const char* n : {"do_h", "dq_h", "dk_h", "dv_h"})
        b.set_free(r, n, end);
      b.set_alloc(r, "do_h", ado < 0 ? fwd_end : do_first);
      for (const char* n : {"dq_h", "dk_h", "dv_h"})
        b.set_alloc(r, n, std::max(ado, fwd_end));
    }
    if (o.scp > 1) {
      scp_bufs.insert(scp_bufs.end(), dk_out.begin(), dk_out.end());
      scp_bufs.insert(scp_bufs.end(), dv_out.begin(), dv_out.end());
      scp_bufs.insert(scp_bufs.end(), grads_in.begin(), grads_in.end());
      for (const auto& n : scp_bufs)
        b.set_free(r, n, end);
      for (const auto& n : dk_out)
        b.set_alloc(r, n, std::max(ado, fwd_end));
      for (const auto& n : dv_out)
        b.set_alloc(r, n, std::max(ado, fwd_end));
    }
  }
  return b.finish();
}

} // namespace cpsim
