// Ring attention (contiguous chunks) and zigzag ring, forward and backward, after zhuzilin's
// ring-flash-attention (schedules.md 3.2, 3.3). Both share one program shape; only the token layout
// differs. Attention pieces are the (query chunk x key chunk) rectangles with visible cells, so any
// mask works and causal steps with no visible work are skipped as the reference code skips them.
#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

namespace cpsim {

namespace {

enum Channel { KV_FWD = 1, KV_BWD = 2, DKV_BWD = 3 };

/** Tokens rank r holds, per sequence (one or two chunks per sequence). */
using Layout = std::vector<std::vector<TokenSlice>>; // [rank] -> slices

Layout ring_layout(const Workload& w, int W) {
  Layout l(static_cast<size_t>(W));
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t c = w.seq_lens[b] / W;
    for (int r = 0; r < W; ++r)
      l[size_t(r)].push_back({int(b), {r * c, (r + 1) * c}});
  }
  return l;
}

Layout zigzag_layout(const Workload& w, int W) {
  Layout l(static_cast<size_t>(W));
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t h = w.seq_lens[b] / (2 * W);
    for (int r = 0; r < W; ++r) {
      l[size_t(r)].push_back({int(b), {r * h, (r + 1) * h}});
      l[size_t(r)].push_back({int(b), {(2 * W - 1 - r) * h, (2 * W - r) * h}});
    }
  }
  return l;
}

int64_t tokens_of(const std::vector<TokenSlice>& s) {
  int64_t t = 0;
  for (const auto& x : s)
    t += x.range.size();
  return t;
}

/** Every (local query chunk x held key chunk) rectangle of the same sequence. */
std::vector<AttnSegment> pieces(const std::vector<TokenSlice>& q, const std::vector<TokenSlice>& k) {
  std::vector<AttnSegment> segs;
  for (const auto& qs : q)
    for (const auto& ks : k)
      if (qs.seq == ks.seq)
        segs.push_back({qs.seq, qs.range, ks.range});
  return segs;
}

Buffer make_buffer(std::string name, std::string tensor, int64_t bytes, int h0, int h1, std::vector<TokenSlice> toks,
                   int alloc = -1, int free = -1) {
  Buffer b;
  b.name = std::move(name);
  b.tensor = std::move(tensor);
  b.bytes = bytes;
  b.head_begin = h0;
  b.head_end = h1;
  b.tokens = std::move(toks);
  b.alloc_op = alloc;
  b.free_op = free;
  return b;
}

struct RankSizes {
  int64_t tokens, B_Q, B_KV, B_LSE;
};

RankSizes sizes_of(const Workload& w, const std::vector<TokenSlice>& mine) {
  int64_t c = tokens_of(mine);
  int64_t e = w.elem_bytes();
  return {c, c * w.heads * w.head_dim * e, 2 * c * w.kv_heads * w.head_dim * e, 4 * c * w.heads};
}

/** Forward of rank r; returns the id of its last compute op. */
int emit_forward(ScheduleBuilder& b, const Layout& layout, int r, int compute, int comm_kv) {
  const Workload& w = b.scenario().workload;
  const int W = static_cast<int>(layout.size()), H = w.heads, G = w.kv_heads, e = w.elem_bytes();
  const auto& mine = layout[size_t(r)];
  const RankSizes z = sizes_of(w, mine);
  const int next = (r + 1) % W, prev = (r - 1 + W) % W;
  b.add_buffer(r, make_buffer("o_acc", "o_acc", z.B_Q * 4 / e, 0, H, mine));
  b.add_buffer(r, make_buffer("lse_acc", "lse_acc", z.B_LSE, 0, H, mine));

  int last_compute = -1, recv_id = -1, first_attn = -1, merges = 0;
  for (int s = 0; s < W; ++s) {
    const std::string kv = s == 0 ? "kv" : "kv_" + std::to_string(s);
    int send_id = -1;
    int this_recv = recv_id;
    if (s < W - 1) {
      std::vector<int> deps;
      if (last_compute >= 0)
        deps.push_back(last_compute); // the transfer of step s is posted after compute s-1 (framework order)
      const std::string nkv = "kv_" + std::to_string(s + 1);
      b.add_buffer(r, make_buffer(nkv, "kv", z.B_KV, 0, G, layout[size_t((r - s - 1 + W) % W)]));
      int g = b.next_group(r);
      send_id = b.send(r, comm_kv, deps, next, z.B_KV, p2p_tag(KV_FWD, s), g, "fwd kv send " + std::to_string(s), kv);
      recv_id = b.recv(r, comm_kv, deps, prev, z.B_KV, p2p_tag(KV_FWD, s), g, "fwd kv recv " + std::to_string(s), nkv);
      b.set_alloc(r, nkv, recv_id);
    }
    std::vector<int> deps;
    if (s > 0)
      deps.push_back(this_recv);
    const int src = (r - s + W) % W;
    const std::string op_ = "o_part_" + std::to_string(s), lp = "lse_part_" + std::to_string(s);
    int a = b.attention(r, compute, deps, Direction::FORWARD, 0, H, pieces(mine, layout[size_t(src)]),
                        "fwd attn step " + std::to_string(s), {"q", kv}, {op_, lp});
    if (s > 0)
      b.set_free(r, kv, std::max(a, send_id));
    if (a < 0)
      continue;
    if (first_attn < 0)
      first_attn = a;
    b.add_buffer(r, make_buffer(op_, "o", z.B_Q, 0, H, mine, a, a));
    b.add_buffer(r, make_buffer(lp, "lse", z.B_LSE, 0, H, mine, a, a));
    int m = b.merge(r, compute, {}, Direction::FORWARD, 0, H, z.tokens, merges == 0 ? 1 : 2, 0,
                    "fwd merge step " + std::to_string(s), {op_, lp, "o_acc", "lse_acc"}, {"o_acc", "lse_acc", "o", "lse"});
    ++merges;
    b.set_free(r, op_, m);
    b.set_free(r, lp, m);
    last_compute = m;
  }
  b.set_alloc(r, "o_acc", first_attn);
  b.set_alloc(r, "lse_acc", first_attn);
  b.set_free(r, "o_acc", last_compute);
  b.set_free(r, "lse_acc", last_compute);
  return last_compute;
}

/** Backward of rank r (zhuzilin): KV ring again, fp32 dKV ring with W sends, local dQ. */
void emit_backward(ScheduleBuilder& b, const Layout& layout, int r, int compute, int comm_kv, int comm_dkv,
                   int last_fwd) {
  const Workload& w = b.scenario().workload;
  const int W = static_cast<int>(layout.size()), H = w.heads, G = w.kv_heads, e = w.elem_bytes();
  const auto& mine = layout[size_t(r)];
  const RankSizes z = sizes_of(w, mine);
  const int next = (r + 1) % W, prev = (r - 1 + W) % W;
  const int64_t dkv32 = z.B_KV * 4 / e;
  b.add_buffer(r, make_buffer("dq_acc", "dq_acc", z.B_Q * 4 / e, 0, H, mine));
  b.add_buffer(r, make_buffer("dq", "dq", z.B_Q, 0, H, mine));

  int last_compute = last_fwd, kv_recv = -1, dkv_recv = -1, first = -1;
  for (int s = 0; s < W; ++s) {
    const std::string kv = s == 0 ? "kv" : "bkv_" + std::to_string(s);
    int kv_send = -1, this_kv_recv = kv_recv;
    if (s < W - 1) {
      std::vector<int> deps;
      if (last_compute >= 0)
        deps.push_back(last_compute);
      const std::string nkv = "bkv_" + std::to_string(s + 1);
      b.add_buffer(r, make_buffer(nkv, "kv", z.B_KV, 0, G, layout[size_t((r - s - 1 + W) % W)]));
      int g = b.next_group(r);
      kv_send = b.send(r, comm_kv, deps, next, z.B_KV, p2p_tag(KV_BWD, s), g, "bwd kv send " + std::to_string(s), kv);
      kv_recv = b.recv(r, comm_kv, deps, prev, z.B_KV, p2p_tag(KV_BWD, s), g, "bwd kv recv " + std::to_string(s), nkv);
      b.set_alloc(r, nkv, kv_recv);
    }
    const int src = (r - s + W) % W;
    const std::string part = "dkv_part_" + std::to_string(s);
    std::vector<int> deps;
    if (s > 0)
      deps.push_back(this_kv_recv);
    int a = b.attention(r, compute, deps, Direction::BACKWARD, 0, H, pieces(mine, layout[size_t(src)]),
                        "bwd attn step " + std::to_string(s), {"q", kv, "o", "lse", "do"}, {"dq_acc", part});
    if (s > 0)
      b.set_free(r, kv, std::max(a, kv_send));
    const std::string acc = "dkv_acc_" + std::to_string(s);
    const std::string in = s == 0 ? "" : "dkv_in_" + std::to_string(s);
    int send_dep = -1;
    if (a >= 0) {
      if (first < 0)
        first = a;
      b.add_buffer(r, make_buffer(part, "dkv", z.B_KV, 0, G, layout[size_t(src)], a, a));
      // dQ accumulates in fp32; dKV = own partial (+ the partial received from the ring)
      int64_t bytes = z.tokens * H * w.head_dim * (4 + e + 4) + (z.B_KV / e) * (s > 0 ? 4 + e + 4 : e + 4);
      std::vector<int> mdeps;
      if (dkv_recv >= 0)
        mdeps.push_back(dkv_recv);
      std::vector<std::string> reads = {part, "dq_acc"};
      if (!in.empty())
        reads.push_back(in);
      int m = b.merge(r, compute, mdeps, Direction::BACKWARD, 0, H, z.tokens, s > 0 ? 2 : 1, bytes,
                      "bwd accumulate step " + std::to_string(s), reads, {"dq_acc", acc});
      b.set_free(r, part, m);
      b.add_buffer(r, make_buffer(acc, "dkv_acc", dkv32, 0, G, layout[size_t(src)], m, m));
      last_compute = m;
      send_dep = m;
    } else {
      b.add_buffer(r, make_buffer(acc, "dkv_acc", 0, 0, G, layout[size_t(src)])); // alias of the received partial
    }
    if (W == 1)
      continue; // a single rank keeps its own gradient
    std::vector<int> sdeps;
    if (send_dep >= 0)
      sdeps.push_back(send_dep);
    int g = b.next_group(r);
    const std::string out_name = "dkv_in_" + std::to_string(s + 1);
    const auto& held_next = layout[size_t((r - s - 1 + W) % W)];
    b.add_buffer(r, make_buffer(out_name, s == W - 1 ? "dkv" : "dkv_acc", dkv32, 0, G, held_next));
    int sid = b.send(r, comm_dkv, sdeps, next, dkv32, p2p_tag(DKV_BWD, s), g, "bwd dkv send " + std::to_string(s),
                     a >= 0 || in.empty() ? acc : in);
    int rid = b.recv(r, comm_dkv, sdeps, prev, dkv32, p2p_tag(DKV_BWD, s), g, "bwd dkv recv " + std::to_string(s), out_name);
    b.set_alloc(r, out_name, rid);
    if (a >= 0)
      b.set_free(r, acc, sid);
    if (!in.empty())
      b.set_free(r, in, std::max(sid, last_compute));
    dkv_recv = rid;
  }
  b.set_alloc(r, "dq_acc", first);
  b.set_free(r, "dq_acc", last_compute);
  (void)first;
}

Schedule generate_ring_like(const Scenario& sc, const MaskGeometry& mask, const std::string& scheme,
                            const Layout& layout) {
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads;
  ScheduleBuilder b(sc, mask, scheme, W);
  const int compute = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm_kv = b.add_stream("comm_kv", StreamKind::COMM);
  const int comm_dkv = sc.pass == PassKind::FWD_BWD ? b.add_stream("comm_dkv", StreamKind::COMM) : -1;
  for (int r = 0; r < W; ++r) {
    const auto& mine = layout[size_t(r)];
    const RankSizes z = sizes_of(w, mine);
    b.add_buffer(r, make_buffer("q", "q", z.B_Q, 0, H, mine));
    b.add_buffer(r, make_buffer("kv", "kv", z.B_KV, 0, G, mine));
    b.add_buffer(r, make_buffer("o", "o", z.B_Q, 0, H, mine));
    b.add_buffer(r, make_buffer("lse", "lse", z.B_LSE, 0, H, mine));
    if (sc.pass == PassKind::FWD_BWD)
      b.add_buffer(r, make_buffer("do", "do", z.B_Q, 0, H, mine));
    int last = emit_forward(b, layout, r, compute, comm_kv);
    if (sc.pass == PassKind::FWD_BWD)
      emit_backward(b, layout, r, compute, comm_kv, comm_dkv, last);
  }
  return b.finish();
}

} // namespace

Schedule generate_ring(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  require_seq_divisible(sc, sc.parallel.cp, "scheme 'ring' with cp = " + std::to_string(sc.parallel.cp));
  return generate_ring_like(sc, mask, "ring", ring_layout(sc.workload, sc.parallel.cp));
}

Schedule generate_zigzag(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  require_seq_divisible(sc, 2 * int64_t(sc.parallel.cp), "scheme 'zigzag' with cp = " + std::to_string(sc.parallel.cp));
  return generate_ring_like(sc, mask, "zigzag", zigzag_layout(sc.workload, sc.parallel.cp));
}

} // namespace cpsim
