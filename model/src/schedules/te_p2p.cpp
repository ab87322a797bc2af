// TransformerEngine cp_comm_type="p2p" (schedules.md 3.6, AttnFuncWithCPAndKVP2P @d0067d0), the CP
// of Megatron-LM. Differs from zhuzilin's ring in what the cost model must see: each KV transfer
// starts as soon as the previous one lands (fresh receive buffer per step, so no wait on compute);
// attention alternates between two compute streams while the other folds the previous step's LSE;
// the output is corrected once at the end, so all W KV buffers and W per-step outputs stay alive;
// the backward ring runs in reverse with bf16 dKV packed next to KV in two ping-pong buffers.
#include "te_common.hpp"

#include <algorithm>
#include <set>
#include <tuple>

namespace cpsim {

namespace {
enum Channel { KV_FWD = 1, P2P_BWD = 2 };

/** Query and key tokens an attention step touches (segments holding visible cells), each range once, in order. */
struct Rows {
  int64_t q = 0, k = 0;
  std::vector<TokenSlice> q_slices, k_slices;
};
Rows rows_of(const ScheduleBuilder& b, const std::vector<AttnSegment>& segs) {
  std::set<std::tuple<int, int64_t, int64_t>> qs, ks;
  for (const auto& s : segs)
    if (b.cells_of({s}) > 0) {
      qs.insert({s.seq, s.q.begin, s.q.end});
      ks.insert({s.seq, s.k.begin, s.k.end});
    }
  Rows r;
  for (const auto& [seq, a, e] : qs) {
    r.q_slices.push_back({seq, {a, e}});
    r.q += e - a;
  }
  for (const auto& [seq, a, e] : ks) {
    r.k_slices.push_back({seq, {a, e}});
    r.k += e - a;
  }
  return r;
}

struct Ctx {
  ScheduleBuilder& b;
  const ring::Layout& L;
  int W, H, G, D, e;
  int comp[2], comm;
};

ring::RingSizes sizes(const Ctx& x, int r) {
  int64_t c = ring::tokens_of(x.L[size_t(r)]);
  return {c, c * x.H * x.D * x.e, 2 * c * x.G * x.D * x.e, 4 * c * x.H};
}

/** Forward of rank r; returns {last op, name of the saved KV buffer (block r+1) for the backward}. */
std::pair<int, std::string> forward(Ctx& x, int r) {
  ScheduleBuilder& b = x.b;
  const int W = x.W, next = (r + 1) % W, prev = (r - 1 + W) % W;
  const auto& mine = x.L[size_t(r)];
  const ring::RingSizes z = sizes(x, r);
  std::vector<int> recv(size_t(W), -1), lse_fix(size_t(W), -1), attn(size_t(W), -1), last_on(2, -1);
  std::vector<int64_t> rows(size_t(W), 0);
  auto kv_name = [](int i) { return i == 0 ? std::string("kv") : "kv_" + std::to_string(i); };
  b.add_buffer(r, ring::make_buffer("lse_acc", "lse_acc", 2 * z.B_LSE, 0, x.H, mine)).dtype = "fp64"; // as in TE
  for (int i = 0; i <= W; ++i) {
    if (i < W) {
      std::vector<int> wait_kv;
      if (i > 0)
        wait_kv.push_back(recv[size_t(i - 1)]);
      if (i < W - 1) { // fresh receive buffer: the transfer need not wait for any compute
        const std::string nkv = kv_name(i + 1);
        b.add_buffer(r, ring::make_buffer(nkv, "kv", z.B_KV, 0, x.G, x.L[size_t((r - i - 1 + W) % W)]));
        int g = b.next_group(r);
        b.send(r, x.comm, wait_kv, next, z.B_KV, p2p_tag(KV_FWD, i), g, "fwd kv send " + std::to_string(i), kv_name(i));
        recv[size_t(i)] = b.recv(r, x.comm, wait_kv, prev, z.B_KV, p2p_tag(KV_FWD, i), g, "fwd kv recv " + std::to_string(i), nkv);
        b.set_alloc(r, nkv, recv[size_t(i)]);
      }
      auto segs = ring::pieces(mine, x.L[size_t((r - i + W) % W)]);
      Rows rw = rows_of(b, segs);
      rows[size_t(i)] = rw.q; // upper-triangle steps produce only the second half of the rows
      const std::string op_ = "o_part_" + std::to_string(i), lp = "lse_part_" + std::to_string(i);
      attn[size_t(i)] = b.attention(r, x.comp[i % 2], wait_kv, Direction::FORWARD, 0, x.H, segs,
                                    "fwd attn step " + std::to_string(i), {"q", kv_name(i)}, {op_, lp});
      CPSIM_ASSERT(attn[size_t(i)] >= 0, "TE p2p steps always hold work under full and causal masks");
      b.add_buffer(r, ring::make_buffer(op_, "o", rw.q * x.H * x.D * x.e, 0, x.H, rw.q_slices, attn[size_t(i)]));
      b.add_buffer(r, ring::make_buffer(lp, "lse", 4 * rw.q * x.H, 0, x.H, rw.q_slices, attn[size_t(i)]));
      last_on[size_t(i % 2)] = attn[size_t(i)];
    }
    if (i > 0) { // fold LSE of step i-1 on its own stream, after the fold of step i-2 (an event)
      const int k = i - 1;
      const std::string lp = "lse_part_" + std::to_string(k);
      std::vector<int> deps;
      if (k > 0)
        deps.push_back(lse_fix[size_t(k - 1)]);
      lse_fix[size_t(k)] = b.merge(r, x.comp[k % 2], deps, Direction::FORWARD, 0, x.H, rows[size_t(k)], k == 0 ? 1 : 2, 0,
                                   "fwd lse correction step " + std::to_string(k), {lp, "lse_acc"}, {"lse_acc"});
      last_on[size_t(k % 2)] = lse_fix[size_t(k)];
      if (k == 0)
        b.set_alloc(r, "lse_acc", lse_fix[0]);
    }
  }
  // The current stream (compute 0) waits for stream 1, then corrects the output step by step.
  int last = -1;
  for (int k = 0; k < W; ++k) {
    std::vector<int> deps;
    if (k == 0)
      deps = {lse_fix[size_t(W - 1)], last_on[1]};
    const std::string op_ = "o_part_" + std::to_string(k), lp = "lse_part_" + std::to_string(k);
    std::vector<std::string> writes = {"o"};
    if (k == W - 1)
      writes.push_back("lse");
    last = b.merge(r, x.comp[0], deps, Direction::FORWARD, 0, x.H, rows[size_t(k)], 2, 0,
                   "fwd out correction step " + std::to_string(k), {op_, lp, "lse_acc", "o"}, writes);
    b.set_free(r, op_, last);
    b.set_free(r, lp, last);
  }
  b.set_free(r, "lse_acc", last);
  const bool keep = b.scenario().pass == PassKind::FWD_BWD;
  for (int i = 1; i < W; ++i)
    if (!(keep && i == W - 1))
      b.set_free(r, kv_name(i), last);
  return {last, kv_name(W - 1)};
}

/**
 * Backward of rank r: reverse ring, step i holds block b_i = (r+1+i) mod W. TE packs [KV of b_i; dKV of b_(i-1)] in
 * one buffer (p2p_comm_buffers); the IR names its two halves (bkv_i, bdkv_i) and a send or receive moves the halves
 * it carries as regions of one message: step 0 KV only, middle steps both, the last step dKV only, into dkv.
 */
void backward(Ctx& x, int r, int last_fwd, const std::string& saved_kv) {
  ScheduleBuilder& b = x.b;
  const int W = x.W, to = (r - 1 + W) % W, from = (r + 1) % W;
  const auto& mine = x.L[size_t(r)];
  const ring::RingSizes z = sizes(x, r);
  auto block = [&](int i) { return (r + 1 + i) % W; };
  auto bkv = [&](int i) { return i == 0 ? saved_kv : "bkv_" + std::to_string(i); };
  auto bdkv = [](int i) { return "bdkv_" + std::to_string(i); }; // dKV of b_(i-1), sent on with bkv_i
  b.add_buffer(r, ring::make_buffer("do", "do", z.B_Q, 0, x.H, mine));
  b.add_buffer(r, ring::make_buffer("dq", "dq", z.B_Q, 0, x.H, mine));
  b.add_buffer(r, ring::make_buffer("dkv", "dkv", z.B_KV, 0, x.G, mine)); // finished at the last step
  for (int i = 1; i < W; ++i) {
    b.add_buffer(r, ring::make_buffer(bkv(i), "kv", z.B_KV, 0, x.G, x.L[size_t(block(i))]));
    b.add_buffer(r, ring::make_buffer(bdkv(i), "dkv", z.B_KV, 0, x.G, x.L[size_t(block(i - 1))]));
  }
  int prev_recv = -1, prev_accum = last_fwd;
  for (int i = 0; i < W; ++i) {
    // what this step adds its dK, dV to: the received dKV of b_i (the last step: the rank's own, into dkv)
    const std::string into = i == W - 1 ? "dkv" : bdkv(i + 1);
    int send = -1, recv = -1;
    if (W > 1) {
      std::vector<BufferRegion> out, in;
      if (i < W - 1)
        out.push_back({bkv(i), {}, {}});
      if (i > 0)
        out.push_back({bdkv(i), {}, {}});
      if (i < W - 1) {
        in.push_back({bkv(i + 1), {}, {}});
        if (i > 0)
          in.push_back({bdkv(i + 1), {}, {}});
      } else {
        in.push_back({"dkv", {}, {}});
      }
      const int64_t bytes = int64_t(out.size()) * z.B_KV; // KV only, then both, then dKV only
      int g = b.next_group(r);
      send = b.send(r, x.comm, {prev_accum}, to, bytes, p2p_tag(P2P_BWD, i), g, "bwd p2p send " + std::to_string(i), out[0].buffer);
      recv = b.recv(r, x.comm, {prev_accum}, from, bytes, p2p_tag(P2P_BWD, i), g, "bwd p2p recv " + std::to_string(i), in[0].buffer);
      b.set_regions(r, send, out);
      b.set_regions(r, recv, in);
      if (i < W - 1) { // step 0 receives KV only: its accumulate writes the dKV half first
        b.set_alloc(r, bkv(i + 1), recv);
        b.set_alloc(r, bdkv(i + 1), recv);
      }
    }
    auto segs = ring::pieces(mine, x.L[size_t(block(i))]);
    Rows rw = rows_of(b, segs);
    const std::string part = "dkv_part_" + std::to_string(i), dq_part = "dq_part_" + std::to_string(i);
    int a = b.attention(r, x.comp[0], {i == 0 ? last_fwd : prev_recv}, Direction::BACKWARD, 0, x.H, segs,
                        "bwd attn step " + std::to_string(i), {"q", bkv(i), "o", "lse", "do"}, {dq_part, part});
    b.add_buffer(r, ring::make_buffer(part, "dkv", rw.k * 2 * x.G * x.D * x.e, 0, x.G, rw.k_slices, a, a));
    b.add_buffer(r, ring::make_buffer(dq_part, "dq", rw.q * x.H * x.D * x.e, 0, x.H, rw.q_slices, a, a));
    // dq += dq_ and the received dKV of b_i += dk_, dv_ (bf16 read-modify-write; step 0 writes both)
    int64_t bytes = rw.q * x.H * x.D * 3 * x.e + rw.k * 2 * x.G * x.D * (i == 0 ? 2 : 3) * x.e;
    prev_accum = b.merge(r, x.comp[0], {recv}, Direction::BACKWARD, 0, x.H, rw.q, i == 0 ? 1 : 2, bytes,
                         "bwd accumulate step " + std::to_string(i), {part, dq_part, "dq", into}, {"dq", into});
    b.set_free(r, part, prev_accum);
    b.set_free(r, dq_part, prev_accum);
    if (i > 0) {
      b.set_free(r, bkv(i), std::max(a, send));
      b.set_free(r, bdkv(i), std::max(prev_accum, send));
    } else if (bkv(0) != "kv") { // the rank's own KV (W = 1) stays resident
      b.set_free(r, bkv(0), std::max(a, send));
    }
    if (i < W - 1)
      b.set_free(r, bdkv(i + 1), prev_accum);
    prev_recv = recv;
  }
}
} // namespace

Schedule generate_te_p2p(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  te::require_mask(sc, "te_p2p", false);
  const ring::Layout L = te::dual_chunk_swap(sc, "te_p2p");
  const Workload& w = sc.workload;
  ScheduleBuilder b(sc, mask, "te_p2p", sc.parallel.cp);
  Ctx x{b, L, sc.parallel.cp, w.heads, w.kv_heads, w.head_dim, w.elem_bytes(), {}, 0};
  x.comp[0] = b.add_stream("compute_0", StreamKind::COMPUTE);
  x.comp[1] = b.add_stream("compute_1", StreamKind::COMPUTE);
  x.comm = b.add_stream("comm_p2p", StreamKind::COMM);
  for (int r = 0; r < x.W; ++r) {
    const auto& mine = L[size_t(r)];
    const ring::RingSizes z = sizes(x, r);
    b.add_buffer(r, ring::make_buffer("q", "q", z.B_Q, 0, w.heads, mine));
    b.add_buffer(r, ring::make_buffer("kv", "kv", z.B_KV, 0, w.kv_heads, mine));
    b.add_buffer(r, ring::make_buffer("o", "o", z.B_Q, 0, w.heads, mine));
    b.add_buffer(r, ring::make_buffer("lse", "lse", z.B_LSE, 0, w.heads, mine));
    auto [last, saved] = forward(x, r);
    if (sc.pass == PassKind::FWD_BWD)
      backward(x, r, last, saved);
  }
  return b.finish();
}

} // namespace cpsim
