// TransformerEngine cp_comm_type="a2a" (schedules.md 3.8, AttnFuncWithCPAndQKVOA2A): Ulysses inside
// TE. Unlike the generic ulysses scheme the tokens enter in DualChunkSwap order (the same batch
// split as TE's other CP types) and TE asserts H % W == 0 and G % W == 0: no KV-head replication.
// Q, K, V go out as three all-to-alls, one full-sequence attention runs on H/W heads, O comes back.
#include "te_common.hpp"

namespace cpsim {

Schedule generate_te_a2a(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  te::require_mask(sc, "te_a2a", true);
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  if (H % W != 0 || G % W != 0)
    throw UserError("'parallel.cp' = " + std::to_string(W) + ": te_a2a needs workload.heads (" + std::to_string(H) +
                    ") and workload.kv_heads (" + std::to_string(G) +
                    ") divisible by cp (TE asserts it; te_p2p or usp scale past the KV heads)");
  const ring::Layout L = te::dual_chunk_swap(sc, "te_a2a");
  ScheduleBuilder b(sc, mask, "te_a2a", W);
  const int compute = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm = b.add_stream("comm_a2a", StreamKind::COMM);
  std::vector<int> group;
  for (int r = 0; r < W; ++r)
    group.push_back(r);
  std::vector<TokenSlice> whole;
  std::vector<AttnSegment> segs;
  int64_t T = 0;
  for (size_t s = 0; s < w.seq_lens.size(); ++s) {
    whole.push_back({int(s), {0, w.seq_lens[s]}});
    segs.push_back({int(s), {0, w.seq_lens[s]}, {0, w.seq_lens[s]}});
    T += w.seq_lens[s];
  }
  const int hq = H / W, hkv = G / W;
  for (int r = 0; r < W; ++r) {
    const auto& mine = L[size_t(r)];
    const int64_t c = ring::tokens_of(mine), B_Q = c * H * D * e, B_K = c * G * D * e;
    const int h0 = r * hq, h1 = h0 + hq, g0 = r * hkv, g1 = g0 + hkv;
    auto buf = [&](std::string n, std::string t, int64_t bytes, int a, int z, const std::vector<TokenSlice>& toks) {
      b.add_buffer(r, ring::make_buffer(std::move(n), std::move(t), bytes, a, z, toks));
    };
    buf("q", "q", B_Q, 0, H, mine);
    buf("k", "k", B_K, 0, G, mine);
    buf("v", "v", B_K, 0, G, mine);
    buf("o", "o", B_Q, 0, H, mine);
    // head-sharded, whole sequences in sequence order (TE reorders the chunks after the a2a)
    const char* fwd_h[] = {"q_h", "k_h", "v_h", "o_h", "lse_h"};
    buf("q_h", "q", B_Q, h0, h1, whole);
    buf("k_h", "k", B_K, g0, g1, whole);
    buf("v_h", "v", B_K, g0, g1, whole);
    buf("o_h", "o", B_Q, h0, h1, whole);
    buf("lse_h", "lse", 4 * T * hq, h0, h1, whole);
    int t = 0;
    int aq = b.collective(r, comm, {}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "fwd a2a q", {"q"}, {"q_h"});
    b.collective(r, comm, {}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "fwd a2a k", {"k"}, {"k_h"});
    int av = b.collective(r, comm, {}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "fwd a2a v", {"v"}, {"v_h"});
    int a = b.attention(r, compute, {av}, Direction::FORWARD, h0, h1, segs, "fwd attn", {"q_h", "k_h", "v_h"},
                        {"o_h", "lse_h"});
    int ao = b.collective(r, comm, {a}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "fwd a2a o", {"o_h"}, {"o"});
    for (const char* n : fwd_h) {
      b.set_alloc(r, n, aq);
      b.set_free(r, n, sc.pass == PassKind::FWD ? std::max(a, ao) : -1);
    }
    if (sc.pass == PassKind::FWD)
      continue;
    buf("do", "do", B_Q, 0, H, mine);
    buf("dq", "dq", B_Q, 0, H, mine);
    buf("dk", "dk", B_K, 0, G, mine);
    buf("dv", "dv", B_K, 0, G, mine);
    const char* bwd_h[] = {"do_h", "dq_h", "dk_h", "dv_h"};
    buf("do_h", "do", B_Q, h0, h1, whole);
    buf("dq_h", "dq", B_Q, h0, h1, whole);
    buf("dk_h", "dk", B_K, g0, g1, whole);
    buf("dv_h", "dv", B_K, g0, g1, whole);
    int ado = b.collective(r, comm, {ao}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "bwd a2a do", {"do"}, {"do_h"});
    int ab = b.attention(r, compute, {ado, a}, Direction::BACKWARD, h0, h1, segs, "bwd attn",
                         {"q_h", "k_h", "v_h", "o_h", "lse_h", "do_h"}, {"dq_h", "dk_h", "dv_h"});
    b.collective(r, comm, {ab}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "bwd a2a dq", {"dq_h"}, {"dq"});
    b.collective(r, comm, {ab}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "bwd a2a dk", {"dk_h"}, {"dk"});
    int adv = b.collective(r, comm, {ab}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "bwd a2a dv", {"dv_h"}, {"dv"});
    b.set_alloc(r, "do_h", ado);
    for (const char* n : {"dq_h", "dk_h", "dv_h"})
      b.set_alloc(r, n, ab);
    for (const char* n : fwd_h)
      b.set_free(r, n, std::max(ab, adv));
    for (const char* n : bwd_h)
      b.set_free(r, n, std::max(ab, adv));
  }
  return b.finish();
}

} // namespace cpsim
