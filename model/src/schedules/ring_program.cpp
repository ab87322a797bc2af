// The ring program of ring_program.hpp. Step structure, buffer lifetimes and dependencies follow
// ring_family.cpp line for line (the equivalence is tested), generalised to ring positions.
#include "ring_program.hpp"

#include <algorithm>

namespace cpsim::ring {

namespace {
enum Channel { KV_FWD = 1, KV_BWD = 2, DKV_BWD = 3 };

std::vector<int> with(std::vector<int> deps, int extra) {
  if (extra >= 0)
    deps.push_back(extra);
  return deps;
}
} // namespace

Layout contiguous_layout(const Workload& w, int n) {
  Layout l(static_cast<size_t>(n));
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t c = w.seq_lens[b] / n;
    for (int r = 0; r < n; ++r)
      l[size_t(r)].push_back({int(b), {r * c, (r + 1) * c}});
  }
  return l;
}

Layout zigzag_layout(const Workload& w, int n) {
  Layout l(static_cast<size_t>(n));
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t h = w.seq_lens[b] / (2 * n);
    for (int r = 0; r < n; ++r) {
      l[size_t(r)].push_back({int(b), {r * h, (r + 1) * h}});
      l[size_t(r)].push_back({int(b), {(2 * n - 1 - r) * h, (2 * n - r) * h}});
    }
  }
  return l;
}

Layout stripe_layout(const Workload& w, int n) {
  Layout l(static_cast<size_t>(n));
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t c = w.seq_lens[b] / n;
    for (int r = 0; r < n; ++r)
      l[size_t(r)].push_back({int(b), {r, r + (c - 1) * n + 1, n}});
  }
  return l;
}

int64_t tokens_of(const std::vector<TokenSlice>& s) {
  int64_t t = 0;
  for (const auto& x : s)
    t += x.range.size();
  return t;
}

std::vector<AttnSegment> pieces(const std::vector<TokenSlice>& q, const std::vector<TokenSlice>& k) {
  std::vector<AttnSegment> segs;
  for (const auto& qs : q)
    for (const auto& ks : k)
      if (qs.seq == ks.seq)
        segs.push_back({qs.seq, qs.range, ks.range});
  return segs;
}

Buffer make_buffer(std::string name, std::string tensor, int64_t bytes, int h0, int h1, std::vector<TokenSlice> toks,
                   int alloc, int free) {
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

RingSizes ring_sizes(const Workload& w, const RingSpec& spec, int pos) {
  int64_t c = tokens_of(spec.layout[size_t(pos)]);
  int64_t e = w.elem_bytes();
  return {c, c * spec.heads() * w.head_dim * e, 2 * c * spec.kv_heads() * w.head_dim * e, 4 * c * spec.heads()};
}

void add_resident_buffers(ScheduleBuilder& b, const RingSpec& spec, int pos) {
  const int r = spec.members[size_t(pos)];
  const auto& mine = spec.layout[size_t(pos)];
  const RingSizes z = ring_sizes(b.scenario().workload, spec, pos);
  const int h0 = spec.head_begin, h1 = spec.head_end;
  b.add_buffer(r, make_buffer(spec.q, "q", z.B_Q, h0, h1, mine));
  b.add_buffer(r, make_buffer(spec.kv, "kv", z.B_KV, spec.kv_head_begin, spec.kv_head_end, mine));
  b.add_buffer(r, make_buffer(spec.o, "o", z.B_Q, h0, h1, mine));
  b.add_buffer(r, make_buffer(spec.lse, "lse", z.B_LSE, h0, h1, mine));
  if (b.scenario().pass == PassKind::FWD_BWD)
    b.add_buffer(r, make_buffer(spec.dout, "do", z.B_Q, h0, h1, mine));
}

int emit_forward(ScheduleBuilder& b, const RingSpec& spec, int pos) {
  const Workload& w = b.scenario().workload;
  const int W = spec.size(), e = w.elem_bytes(), H0 = spec.head_begin, H1 = spec.head_end;
  const int G0 = spec.kv_head_begin, G1 = spec.kv_head_end;
  const int r = spec.members[size_t(pos)];
  const auto& L = spec.layout;
  const auto& mine = L[size_t(pos)];
  const RingSizes z = ring_sizes(w, spec, pos);
  const int next = spec.members[size_t((pos + 1) % W)], prev = spec.members[size_t((pos - 1 + W) % W)];
  const std::string& P = spec.prefix;
  b.add_buffer(r, make_buffer(P + "o_acc", "o_acc", z.B_Q * 4 / e, H0, H1, mine));
  b.add_buffer(r, make_buffer(P + "lse_acc", "lse_acc", z.B_LSE, H0, H1, mine));

  int last_compute = -1, recv_id = -1, first_attn = -1, merges = 0;
  for (int s = 0; s < W; ++s) {
    const std::string kv = s == 0 ? spec.kv : P + "kv_" + std::to_string(s);
    int send_id = -1;
    int this_recv = recv_id;
    if (s < W - 1) {
      // the transfer of step s is posted after compute s-1 (framework order)
      std::vector<int> deps = with(spec.start_deps, last_compute);
      const std::string nkv = P + "kv_" + std::to_string(s + 1);
      b.add_buffer(r, make_buffer(nkv, "kv", z.B_KV, G0, G1, L[size_t((pos - s - 1 + W) % W)]));
      int g = b.next_group(r);
      send_id = b.send(r, spec.comm_kv, deps, next, z.B_KV, p2p_tag(KV_FWD, s), g, "fwd kv send " + std::to_string(s), kv);
      recv_id = b.recv(r, spec.comm_kv, deps, prev, z.B_KV, p2p_tag(KV_FWD, s), g, "fwd kv recv " + std::to_string(s), nkv);
      b.set_alloc(r, nkv, recv_id);
    }
    std::vector<int> deps = s == 0 ? spec.start_deps : with({}, this_recv);
    const int src = (pos - s + W) % W;
    const std::string op_ = P + "o_part_" + std::to_string(s), lp = P + "lse_part_" + std::to_string(s);
    int a = b.attention(r, spec.compute, deps, Direction::FORWARD, H0, H1, pieces(mine, L[size_t(src)]),
                        "fwd attn step " + std::to_string(s), {spec.q, kv}, {op_, lp});
    if (s > 0)
      b.set_free(r, kv, std::max(a, send_id));
    if (a < 0)
      continue;
    if (first_attn < 0)
      first_attn = a;
    b.add_buffer(r, make_buffer(op_, "o", z.B_Q, H0, H1, mine, a, a));
    b.add_buffer(r, make_buffer(lp, "lse", z.B_LSE, H0, H1, mine, a, a));
    int m = b.merge(r, spec.compute, {}, Direction::FORWARD, H0, H1, z.tokens, merges == 0 ? 1 : 2, 0,
                    "fwd merge step " + std::to_string(s), {op_, lp, P + "o_acc", P + "lse_acc"},
                    {P + "o_acc", P + "lse_acc", spec.o, spec.lse});
    ++merges;
    b.set_free(r, op_, m);
    b.set_free(r, lp, m);
    last_compute = m;
  }
  b.set_alloc(r, P + "o_acc", first_attn);
  b.set_alloc(r, P + "lse_acc", first_attn);
  b.set_free(r, P + "o_acc", last_compute);
  b.set_free(r, P + "lse_acc", last_compute);
  return last_compute;
}

BackwardResult emit_backward(ScheduleBuilder& b, const RingSpec& spec, int pos, int last_fwd) {
  const Workload& w = b.scenario().workload;
  const int W = spec.size(), e = w.elem_bytes(), H0 = spec.head_begin, H1 = spec.head_end;
  const int G0 = spec.kv_head_begin, G1 = spec.kv_head_end;
  const int r = spec.members[size_t(pos)];
  const auto& L = spec.layout;
  const auto& mine = L[size_t(pos)];
  const RingSizes z = ring_sizes(w, spec, pos);
  const int next = spec.members[size_t((pos + 1) % W)], prev = spec.members[size_t((pos - 1 + W) % W)];
  const int64_t dkv32 = z.B_KV * 4 / e;
  const std::string& P = spec.prefix;
  b.add_buffer(r, make_buffer(P + "dq_acc", "dq_acc", z.B_Q * 4 / e, H0, H1, mine));
  b.add_buffer(r, make_buffer(spec.dq, "dq", z.B_Q, H0, H1, mine));

  BackwardResult out;
  int last_compute = last_fwd, kv_recv = -1, dkv_recv = -1, first = -1;
  for (int s = 0; s < W; ++s) {
    const std::string kv = s == 0 ? spec.kv : P + "bkv_" + std::to_string(s);
    int kv_send = -1, this_kv_recv = kv_recv;
    if (s < W - 1) {
      std::vector<int> deps = with(spec.start_deps, last_compute);
      const std::string nkv = P + "bkv_" + std::to_string(s + 1);
      b.add_buffer(r, make_buffer(nkv, "kv", z.B_KV, G0, G1, L[size_t((pos - s - 1 + W) % W)]));
      int g = b.next_group(r);
      kv_send = b.send(r, spec.comm_kv, deps, next, z.B_KV, p2p_tag(KV_BWD, s), g, "bwd kv send " + std::to_string(s), kv);
      kv_recv = b.recv(r, spec.comm_kv, deps, prev, z.B_KV, p2p_tag(KV_BWD, s), g, "bwd kv recv " + std::to_string(s), nkv);
      b.set_alloc(r, nkv, kv_recv);
    }
    const int src = (pos - s + W) % W;
    const std::string part = P + "dkv_part_" + std::to_string(s);
    std::vector<int> deps = s == 0 ? spec.start_deps : with({}, this_kv_recv);
    int a = b.attention(r, spec.compute, deps, Direction::BACKWARD, H0, H1, pieces(mine, L[size_t(src)]),
                        "bwd attn step " + std::to_string(s), {spec.q, kv, spec.o, spec.lse, spec.dout},
                        {P + "dq_acc", part});
    if (s > 0)
      b.set_free(r, kv, std::max(a, kv_send));
    const std::string acc = P + "dkv_acc_" + std::to_string(s);
    const std::string in = s == 0 ? "" : P + "dkv_in_" + std::to_string(s);
    int send_dep = -1;
    if (a >= 0) {
      if (first < 0)
        first = a;
      b.add_buffer(r, make_buffer(part, "dkv", z.B_KV, G0, G1, L[size_t(src)], a, a));
      // dQ needs no pass here: the attention kernel adds into the fp32 dq_acc itself. dKV: the bf16 partial is
      // converted into the fp32 accumulator (read e, write 4 per element); from step 1 on the fp32 partial received
      // from the ring is added to it in a second pass (read 4 + 4, write 4), as the backend executes this op.
      int64_t bytes = (z.B_KV / e) * (e + 4 + (s > 0 ? 12 : 0));
      std::vector<std::string> reads = {part, P + "dq_acc"};
      if (!in.empty())
        reads.push_back(in);
      int m = b.merge(r, spec.compute, with({}, dkv_recv), Direction::BACKWARD, H0, H1, z.tokens, s > 0 ? 2 : 1, bytes,
                      "bwd accumulate step " + std::to_string(s), reads, {P + "dq_acc", acc});
      b.set_free(r, part, m);
      // with one ring rank the accumulator is the result, read later by the caller (USP's reverse all-to-all)
      b.add_buffer(r, make_buffer(acc, "dkv_acc", dkv32, G0, G1, L[size_t(src)], m, W == 1 ? -1 : m));
      last_compute = m;
      send_dep = m;
    } else {
      b.add_buffer(r, make_buffer(acc, "dkv_acc", 0, G0, G1, L[size_t(src)])); // alias of the received partial
    }
    if (W == 1) { // a single rank keeps its own gradient
      out.dkv = acc;
      out.dkv_ready = last_compute;
      continue;
    }
    int g = b.next_group(r);
    const std::string out_name = P + "dkv_in_" + std::to_string(s + 1);
    b.add_buffer(r, make_buffer(out_name, s == W - 1 ? "dkv" : "dkv_acc", dkv32, G0, G1, L[size_t((pos - s - 1 + W) % W)]));
    int sid = b.send(r, spec.comm_dkv, with({}, send_dep), next, dkv32, p2p_tag(DKV_BWD, s), g,
                     "bwd dkv send " + std::to_string(s), a >= 0 || in.empty() ? acc : in);
    int rid = b.recv(r, spec.comm_dkv, with({}, send_dep), prev, dkv32, p2p_tag(DKV_BWD, s), g,
                     "bwd dkv recv " + std::to_string(s), out_name);
    b.set_alloc(r, out_name, rid);
    if (a >= 0)
      b.set_free(r, acc, sid);
    if (!in.empty())
      b.set_free(r, in, std::max(sid, last_compute));
    dkv_recv = rid;
    out.dkv = out_name;
    out.dkv_ready = rid;
  }
  b.set_alloc(r, P + "dq_acc", first);
  if (first >= 0) { // dQ leaves in the input dtype, as the kernels' callers hand it on (and USP's all-to-all sends it)
    const int64_t bytes = z.tokens * spec.heads() * w.head_dim * (4 + e);
    last_compute = b.merge(r, spec.compute, {}, Direction::BACKWARD, H0, H1, z.tokens, 1, bytes, "bwd dq cast",
                           {P + "dq_acc"}, {spec.dq});
  }
  b.set_free(r, P + "dq_acc", last_compute);
  out.last_compute = last_compute;
  return out;
}

Schedule generate_world_ring(const Scenario& sc, const MaskGeometry& mask, const std::string& scheme, Layout layout) {
  const int W = sc.parallel.cp;
  ScheduleBuilder b(sc, mask, scheme, W);
  RingSpec spec;
  spec.compute = b.add_stream("compute", StreamKind::COMPUTE);
  spec.comm_kv = b.add_stream("comm_kv", StreamKind::COMM);
  spec.comm_dkv = sc.pass == PassKind::FWD_BWD ? b.add_stream("comm_dkv", StreamKind::COMM) : -1;
  for (int r = 0; r < W; ++r)
    spec.members.push_back(r);
  spec.layout = std::move(layout);
  spec.head_end = sc.workload.heads;
  spec.kv_head_end = sc.workload.kv_heads;
  for (int r = 0; r < W; ++r) {
    add_resident_buffers(b, spec, r);
    int last = emit_forward(b, spec, r);
    if (sc.pass == PassKind::FWD_BWD)
      emit_backward(b, spec, r, last);
  }
  return b.finish();
}

} // namespace cpsim::ring
