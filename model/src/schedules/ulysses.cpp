// DeepSpeed-Ulysses (schedules.md 4.1): all-to-all Q, K, V from sequence sharding to head sharding,
// full-sequence attention on H/W heads, all-to-all O back; backward mirrors it with dO in and
// dQ, dK, dV out. With fewer KV heads than ranks, KV heads are replicated before the all-to-all, and the
// reverse all-to-all of dK, dV sums the replicas (pieces from two ranks land on one head's rows; the backend adds).
#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include "cpsim/model/errors.hpp"

namespace cpsim {

Schedule generate_ulysses(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  if (H % W != 0)
    throw UserError("'parallel.cp' = " + std::to_string(W) + ": ulysses needs workload.heads (" + std::to_string(H) +
                    ") divisible by cp");
  if (G % W != 0 && W % G != 0)
    throw UserError("'parallel.cp' = " + std::to_string(W) + ": ulysses needs workload.kv_heads (" + std::to_string(G) +
                    ") to divide cp or be divisible by it");
  require_seq_divisible(sc, W, "scheme 'ulysses' with cp = " + std::to_string(W));

  ScheduleBuilder b(sc, mask, "ulysses", W);
  const int compute = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm = b.add_stream("comm_a2a", StreamKind::COMM);
  std::vector<int> group;
  for (int r = 0; r < W; ++r)
    group.push_back(r);

  const int Gx = std::max(G, W); // KV heads after replication, all ranks together
  const int hq = H / W, hkv = Gx / W;
  for (int r = 0; r < W; ++r) {
    std::vector<TokenSlice> local, whole;
    std::vector<AttnSegment> segs;
    int64_t c = 0, T = 0;
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      int64_t n = w.seq_lens[s], cs = n / W;
      local.push_back({int(s), {r * cs, (r + 1) * cs}});
      whole.push_back({int(s), {0, n}});
      segs.push_back({int(s), {0, n}, {0, n}});
      c += cs;
      T += n;
    }
    const int64_t B_Q = c * H * D * e, B_K = c * Gx * D * e, B_LSE = 4 * T * hq;
    auto buf = [&](std::string name, std::string tensor, int64_t bytes, int h0, int h1, std::vector<TokenSlice> t) {
      Buffer x;
      x.name = std::move(name);
      x.tensor = std::move(tensor);
      x.bytes = bytes;
      x.head_begin = h0;
      x.head_end = h1;
      x.tokens = std::move(t);
      b.add_buffer(r, x);
    };
    buf("q", "q", B_Q, 0, H, local);
    buf("k", "k", B_K * G / Gx, 0, G, local);
    buf("v", "v", B_K * G / Gx, 0, G, local);
    buf("o", "o", B_Q, 0, H, local);
    // head-sharded copies: whole sequences, H/W query heads and their KV heads
    const int h0 = r * hq, h1 = h0 + hq, g0 = r * hkv * G / Gx, g1 = std::max(g0 + 1, (r + 1) * hkv * G / Gx);
    buf("q_h", "q", B_Q, h0, h1, whole);
    buf("k_h", "k", B_K, g0, g1, whole);
    buf("v_h", "v", B_K, g0, g1, whole);
    buf("o_h", "o", B_Q, h0, h1, whole);
    buf("lse_h", "lse", B_LSE, h0, h1, whole);

    int t = 0;
    int aq = b.collective(r, comm, {}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "a2a q", {"q"}, {"q_h"});
    b.collective(r, comm, {}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "a2a k", {"k"}, {"k_h"});
    int av = b.collective(r, comm, {}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "a2a v", {"v"}, {"v_h"});
    int a = b.attention(r, compute, {av}, Direction::FORWARD, h0, h1, segs, "fwd attn", {"q_h", "k_h", "v_h"},
                        {"o_h", "lse_h"});
    int ao = b.collective(r, comm, {a}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "a2a o", {"o_h"}, {"o"});
    for (const char* n : {"q_h", "k_h", "v_h", "o_h", "lse_h"})
      b.set_alloc(r, n, aq);
    if (sc.pass == PassKind::FWD) {
      for (const char* n : {"q_h", "k_h", "v_h", "o_h", "lse_h"})
        b.set_free(r, n, ao);
      continue;
    }
    // ---- backward: the head-sharded q, k, v, o, lse are kept from the forward
    buf("do", "do", B_Q, 0, H, local);
    buf("do_h", "do", B_Q, h0, h1, whole);
    buf("dq_h", "dq", B_Q, h0, h1, whole);
    buf("dk_h", "dk", B_K, g0, g1, whole);
    buf("dv_h", "dv", B_K, g0, g1, whole);
    buf("dq", "dq", B_Q, 0, H, local);
    buf("dk", "dk", B_K * G / Gx, 0, G, local);
    buf("dv", "dv", B_K * G / Gx, 0, G, local);
    int ado = b.collective(r, comm, {ao}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "a2a do", {"do"}, {"do_h"});
    int ab = b.attention(r, compute, {ado}, Direction::BACKWARD, h0, h1, segs, "bwd attn",
                         {"q_h", "k_h", "v_h", "o_h", "lse_h", "do_h"}, {"dq_h", "dk_h", "dv_h"});
    b.collective(r, comm, {ab}, CollectiveKind::ALL_TO_ALL, group, B_Q, t++, "a2a dq", {"dq_h"}, {"dq"});
    b.collective(r, comm, {ab}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "a2a dk", {"dk_h"}, {"dk"});
    int adv = b.collective(r, comm, {ab}, CollectiveKind::ALL_TO_ALL, group, B_K, t++, "a2a dv", {"dv_h"}, {"dv"});
    b.set_alloc(r, "do_h", ado);
    for (const char* n : {"dq_h", "dk_h", "dv_h"})
      b.set_alloc(r, n, ab);
    for (const char* n : {"q_h", "k_h", "v_h", "o_h", "lse_h", "do_h", "dq_h", "dk_h", "dv_h"})
      b.set_free(r, n, adv);
  }
  return b.finish();
}

} // namespace cpsim
