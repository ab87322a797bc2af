// TransformerEngine cp_comm_type="all_gather" (schedules.md 3.7, AttnFuncWithCPAndKVAllGather), the
// Llama-3 recipe: K and V are all-gathered with nothing to hide them behind, then each of the two
// DualChunkSwap query chunks attends to the key prefix it can see, on two compute streams (TE does
// this against wave quantisation). No LSE merge is needed. The backward gathers KV again, computes
// into zeroed full-length dK and dV and reduce-scatters them.
#include "te_common.hpp"

#include <algorithm>

namespace cpsim {

namespace {
/** Keys chunk `q` of a sequence can see: a prefix for causal, a band for sliding window. */
TokenRange visible_keys(const MaskSpec& m, TokenRange q, int64_t seq_len) {
  if (m.kind == MaskKind::FULL)
    return {0, seq_len};
  int64_t begin = m.kind == MaskKind::SLIDING_WINDOW ? std::max<int64_t>(0, q.begin - m.window + 1) : 0;
  return {begin, q.end};
}
} // namespace

Schedule generate_te_allgather(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  te::require_mask(sc, "te_allgather", true);
  const ring::Layout L = te::dual_chunk_swap(sc, "te_allgather");
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  const bool bwd = sc.pass == PassKind::FWD_BWD;
  ScheduleBuilder b(sc, mask, "te_allgather", W);
  const int comp[2] = {b.add_stream("compute_0", StreamKind::COMPUTE), b.add_stream("compute_1", StreamKind::COMPUTE)};
  const int comm = b.add_stream("comm_ag", StreamKind::COMM);
  std::vector<int> all;
  for (int r = 0; r < W; ++r)
    all.push_back(r);
  std::vector<TokenSlice> whole;
  for (size_t s = 0; s < w.seq_lens.size(); ++s)
    whole.push_back({int(s), {0, w.seq_lens[s]}});

  for (int r = 0; r < W; ++r) {
    const auto& mine = L[size_t(r)];
    const int64_t c = ring::tokens_of(mine), B_Q = c * H * D * e, B_KV = 2 * c * G * D * e;
    auto buf = [&](std::string n, std::string t, int64_t bytes, int h1, std::vector<TokenSlice> toks) {
      b.add_buffer(r, ring::make_buffer(std::move(n), std::move(t), bytes, 0, h1, std::move(toks)));
    };
    buf("q", "q", B_Q, H, mine);
    buf("kv", "kv", B_KV, G, mine);
    buf("o", "o", B_Q, H, mine);
    buf("lse", "lse", 4 * c * H, H, mine);
    // per stream: the segments of one local chunk (slice 0 or 1 of every sequence) and their key rows
    std::vector<AttnSegment> segs[2];
    int64_t q_rows[2] = {0, 0}, k_rows[2] = {0, 0};
    for (size_t i = 0; i < mine.size(); ++i) {
      const TokenSlice& t = mine[i];
      TokenRange k = visible_keys(w.mask, t.range, w.seq_lens[size_t(t.seq)]);
      segs[i % 2].push_back({t.seq, t.range, k});
      q_rows[i % 2] += t.range.size();
      k_rows[i % 2] += k.size();
    }
    // K and V are gathered by two collectives (gather_along_first_dim each) into one buffer
    auto gather = [&](int tag, std::vector<int> deps, const std::string& dir, const std::string& into) {
      buf(into, "kv", W * B_KV, G, whole);
      int k = b.collective(r, comm, deps, CollectiveKind::ALL_GATHER, all, B_KV / 2, tag, dir + " ag k", {"kv"}, {into});
      int v = b.collective(r, comm, {}, CollectiveKind::ALL_GATHER, all, B_KV / 2, tag + 1, dir + " ag v", {"kv"}, {into});
      b.set_plane(r, k, 0);
      b.set_plane(r, v, 1);
      b.set_alloc(r, into, k);
      return v;
    };
    // ---- forward: exposed all-gather, then both chunks at once on two streams
    int ag = gather(0, {}, "fwd", "kv_gathered_fwd");
    int a[2];
    for (int i = 0; i < 2; ++i)
      a[i] = b.attention(r, comp[i], {ag}, Direction::FORWARD, 0, H, segs[i], "fwd attn chunk " + std::to_string(i),
                         {"q", "kv_gathered_fwd"}, {"o", "lse"});
    b.set_free(r, "kv_gathered_fwd", std::max({a[0], a[1], ag}));
    if (!bwd)
      continue;
    // ---- backward: gather again, two chunk backwards into full-length dK, dV, reduce-scatter them
    buf("do", "do", B_Q, H, mine);
    buf("dq", "dq", B_Q, H, mine);
    buf("dkv", "dkv", B_KV, G, mine);
    buf("dkv_full", "dkv", W * B_KV, G, whole);
    int ag2 = gather(2, {a[0], a[1]}, "bwd", "kv_gathered_bwd");
    int m[2];
    for (int i = 0; i < 2; ++i) {
      const std::string part = "dkv_part_" + std::to_string(i);
      std::vector<TokenSlice> keys;
      for (const auto& sg : segs[i])
        keys.push_back({sg.seq, sg.k});
      buf(part, "dkv", k_rows[i] * 2 * G * D * e, G, keys);
      int ab = b.attention(r, comp[i], {ag2}, Direction::BACKWARD, 0, H, segs[i], "bwd attn chunk " + std::to_string(i),
                           {"q", "kv_gathered_bwd", "o", "lse", "do"}, {"dq", part});
      // dk[:, :kv_end] += dk_ (read part, read-modify-write the full-length bf16 buffer); the two chunks' streams
      // add into one buffer, so the second addition waits for the first (concurrent read-modify-writes would race)
      m[i] = b.merge(r, comp[i], i == 0 ? std::vector<int>{} : std::vector<int>{m[0]}, Direction::BACKWARD, 0, H, q_rows[i], 1, k_rows[i] * 2 * G * D * 3 * e,
                     "bwd accumulate chunk " + std::to_string(i), {part, "dkv_full"}, {"dkv_full"});
      b.set_alloc(r, part, ab);
      b.set_free(r, part, m[i]);
      b.set_free(r, "kv_gathered_bwd", ab);
      if (i == 0)
        b.set_alloc(r, "dkv_full", ab);
    }
    b.set_plane(r, b.collective(r, comm, {m[0], m[1]}, CollectiveKind::REDUCE_SCATTER, all, B_KV / 2, 4, "bwd rs dk", {"dkv_full"}, {"dkv"}), 0);
    int rs = b.collective(r, comm, {}, CollectiveKind::REDUCE_SCATTER, all, B_KV / 2, 5, "bwd rs dv", {"dkv_full"}, {"dkv"});
    b.set_plane(r, rs, 1);
    b.set_free(r, "dkv_full", std::max({rs, m[0], m[1]}));
  }
  return b.finish();
}

} // namespace cpsim
