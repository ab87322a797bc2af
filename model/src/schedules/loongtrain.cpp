// LoongTrain 2D-Attention with Double-Ring-Attention (schedules.md 4.3; InternEvo's
// zigzag_double_ring_flash_attn_{forward,backward} as copied into chenyu-jiang/dcp). W = d_hp x d_cp:
// head-parallel all-to-all over contiguous groups of d_hp ranks (head-first placement, KV heads
// replicated up to d_hp), then a zigzag ring over d_cp ranks cut into windows of w: an inner ring
// inside each window on its own communicator, and an outer ring between windows whose one KV
// transfer hides behind w inner steps. The backward adds inner and outer dKV rings (fp32 inside the
// first window, bf16 afterwards, as InternEvo casts when a window's gradient leaves it).
#include "hybrid_degrees.hpp"
#include "ring_program.hpp"

#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <tuple>

namespace cpsim {

namespace {
const std::vector<std::string> kKeys = {"head_degree", "context_degree", "window_size"};
enum Channel { IN_FWD = 11, OUT_FWD = 12, IN_BWD = 13, OUT_BWD = 14, IN_DKV = 15, OUT_DKV = 16 };

std::vector<int> with(std::vector<int> deps, int extra) {
  if (extra >= 0)
    deps.push_back(extra);
  return deps;
}

/** One rank's place in the double ring and the names it needs. */
struct DoubleRing {
  ScheduleBuilder& b;
  const ring::Layout& L; // per context-ring position
  int d_hp, d_cp, w, nw;
  int rank, pos, win, inner;
  int h0, h1, g0, g1;
  int compute, in_kv, out_kv, in_dkv, out_dkv;
  int64_t B_Q, B_KV, B_LSE, tokens;

  int global(int p) const { return p * d_hp + rank % d_hp; } // head-first: ring members strided by d_hp
  int inner_peer(int step) const { return global(win * w + (inner + step + w) % w); }
  int outer_peer(int step) const { return global(((win + step + nw) % nw) * w + inner); }
  /** Ring position whose KV this rank holds at outer step j, inner step t. */
  int held(int j, int t) const { return ((win - j + nw) % nw) * w + (inner - t + w) % w; }
  Buffer buf(std::string n, std::string t, int64_t bytes, int p, bool kv, int alloc = -1) const {
    return ring::make_buffer(std::move(n), std::move(t), bytes, kv ? g0 : h0, kv ? g1 : h1, L[size_t(p)], alloc);
  }
};

std::string step_name(const std::string& base, int j, int t) {
  return base + "_" + std::to_string(j) + "_" + std::to_string(t);
}

/** Forward; returns the last compute op. `start` gates the first transfers and attention. */
int forward(DoubleRing& x, int start) {
  ScheduleBuilder& b = x.b;
  const int r = x.rank, e = b.scenario().workload.elem_bytes();
  b.add_buffer(r, x.buf("o_acc", "o_acc", x.B_Q * 4 / e, x.pos, false));
  b.add_buffer(r, x.buf("lse_acc", "lse_acc", x.B_LSE, x.pos, false));
  int last = -1, outer_recv = -1, first = -1, merges = 0;
  std::string local = "kv_h";
  for (int j = 0; j < x.nw; ++j) {
    const int arrived = j == 0 ? start : outer_recv; // the outer KV this window works on
    int outer_send = -1;
    if (j + 1 < x.nw) {
      const std::string nkv = "okv_" + std::to_string(j + 1);
      b.add_buffer(r, x.buf(nkv, "kv", x.B_KV, x.held(j + 1, 0), true));
      int g = b.next_group(r);
      auto deps = with(with({}, arrived), last);
      outer_send = b.send(r, x.out_kv, deps, x.outer_peer(1), x.B_KV, p2p_tag(OUT_FWD, j), g,
                          "fwd outer kv send " + std::to_string(j), local);
      outer_recv = b.recv(r, x.out_kv, deps, x.outer_peer(-1), x.B_KV, p2p_tag(OUT_FWD, j), g,
                          "fwd outer kv recv " + std::to_string(j), nkv);
      b.set_alloc(r, nkv, outer_recv);
    }
    std::string kv = local;
    int inner_recv = -1;
    for (int t = 0; t < x.w; ++t) {
      int inner_send = -1, got = t == 0 ? arrived : inner_recv;
      std::string next_kv;
      if (t + 1 < x.w) {
        next_kv = step_name("ikv", j, t + 1);
        b.add_buffer(r, x.buf(next_kv, "kv", x.B_KV, x.held(j, t + 1), true));
        int g = b.next_group(r);
        auto deps = with(with({}, got), last);
        inner_send = b.send(r, x.in_kv, deps, x.inner_peer(1), x.B_KV, p2p_tag(IN_FWD, j * x.w + t), g,
                            "fwd inner kv send " + std::to_string(j) + "." + std::to_string(t), kv);
        inner_recv = b.recv(r, x.in_kv, deps, x.inner_peer(-1), x.B_KV, p2p_tag(IN_FWD, j * x.w + t), g,
                            "fwd inner kv recv " + std::to_string(j) + "." + std::to_string(t), next_kv);
        b.set_alloc(r, next_kv, inner_recv);
      }
      const std::string op_ = step_name("o_part", j, t), lp = step_name("lse_part", j, t);
      int a = b.attention(r, x.compute, with({}, got), Direction::FORWARD, x.h0, x.h1,
                          ring::pieces(x.L[size_t(x.pos)], x.L[size_t(x.held(j, t))]),
                          "fwd attn step " + std::to_string(j) + "." + std::to_string(t), {"q_h", kv}, {op_, lp});
      if (kv != "kv_h")
        b.set_free(r, kv, std::max({a, inner_send, t == 0 ? outer_send : -1}));
      kv = next_kv;
      if (a < 0)
        continue;
      first = first < 0 ? a : first;
      b.add_buffer(r, x.buf(op_, "o", x.B_Q, x.pos, false, a));
      b.add_buffer(r, x.buf(lp, "lse", x.B_LSE, x.pos, false, a));
      last = b.merge(r, x.compute, {}, Direction::FORWARD, x.h0, x.h1, x.tokens, merges++ == 0 ? 1 : 2, 0,
                     "fwd merge step " + std::to_string(j) + "." + std::to_string(t), {op_, lp, "o_acc", "lse_acc"},
                     {"o_acc", "lse_acc", "o_h", "lse_h"});
      b.set_free(r, op_, last);
      b.set_free(r, lp, last);
    }
    if (j + 1 < x.nw)
      local = "okv_" + std::to_string(j + 1);
  }
  for (const char* n : {"o_acc", "lse_acc"}) {
    b.set_alloc(r, n, first);
    b.set_free(r, n, last);
  }
  return last;
}

struct BwdOut {
  int last = -1, dkv_ready = -1;
  std::string dkv;
};

/** Backward: KV rings again, dKV accumulating along the inner ring, then handed to the next window. */
BwdOut backward(DoubleRing& x, int start, int last_fwd) {
  ScheduleBuilder& b = x.b;
  const Workload& wl = b.scenario().workload;
  const int r = x.rank, e = wl.elem_bytes();
  b.add_buffer(r, x.buf("dq_acc", "dq_acc", x.B_Q * 4 / e, x.pos, false));
  BwdOut out;
  int last = last_fwd, outer_recv = -1, outer_dkv_recv = -1, first = -1;
  std::string local = "kv_h", dkv_in; // dkv_in: the partial dKV this window starts from
  for (int j = 0; j < x.nw; ++j) {
    const int arrived = j == 0 ? start : outer_recv;
    const int64_t dkv_bytes = j == 0 ? x.B_KV * 4 / e : x.B_KV; // fp32 only inside the first window
    int outer_send = -1;
    if (j + 1 < x.nw) {
      const std::string nkv = "bokv_" + std::to_string(j + 1);
      b.add_buffer(r, x.buf(nkv, "kv", x.B_KV, x.held(j + 1, 0), true));
      int g = b.next_group(r);
      auto deps = with(with({}, arrived), last);
      outer_send = b.send(r, x.out_kv, deps, x.outer_peer(1), x.B_KV, p2p_tag(OUT_BWD, j), g,
                          "bwd outer kv send " + std::to_string(j), local);
      outer_recv = b.recv(r, x.out_kv, deps, x.outer_peer(-1), x.B_KV, p2p_tag(OUT_BWD, j), g,
                          "bwd outer kv recv " + std::to_string(j), nkv);
      b.set_alloc(r, nkv, outer_recv);
    }
    std::string kv = local, carried = dkv_in; // carried: received dKV partial of the block held now
    int inner_recv = -1, dkv_recv = j == 0 ? -1 : outer_dkv_recv;
    for (int t = 0; t < x.w; ++t) {
      const std::string tag_s = std::to_string(j) + "." + std::to_string(t);
      int inner_send = -1, got = t == 0 ? arrived : inner_recv;
      std::string next_kv;
      if (t + 1 < x.w) {
        next_kv = step_name("bikv", j, t + 1);
        b.add_buffer(r, x.buf(next_kv, "kv", x.B_KV, x.held(j, t + 1), true));
        int g = b.next_group(r);
        auto deps = with(with({}, got), last);
        inner_send = b.send(r, x.in_kv, deps, x.inner_peer(1), x.B_KV, p2p_tag(IN_BWD, j * x.w + t), g,
                            "bwd inner kv send " + tag_s, kv);
        inner_recv = b.recv(r, x.in_kv, deps, x.inner_peer(-1), x.B_KV, p2p_tag(IN_BWD, j * x.w + t), g,
                            "bwd inner kv recv " + tag_s, next_kv);
        b.set_alloc(r, next_kv, inner_recv);
      }
      const int src = x.held(j, t);
      const std::string part = step_name("dkv_part", j, t), acc = step_name("dkv_acc", j, t);
      int a = b.attention(r, x.compute, with({}, got), Direction::BACKWARD, x.h0, x.h1,
                          ring::pieces(x.L[size_t(x.pos)], x.L[size_t(src)]), "bwd attn step " + tag_s,
                          {"q_h", kv, "o_h", "lse_h", "do_h"}, {"dq_acc", part});
      if (kv != "kv_h")
        b.set_free(r, kv, std::max({a, inner_send, t == 0 ? outer_send : -1}));
      kv = next_kv;
      int send_dep = dkv_recv; // with no work here the received partial is forwarded untouched
      std::string to_send = carried;
      if (a >= 0) {
        first = first < 0 ? a : first;
        b.add_buffer(r, x.buf(part, "dkv", x.B_KV, src, true, a));
        const int64_t elems = x.B_KV / e;
        const int64_t acc_e = dkv_bytes / elems; // 4 in the first window, e after
        // dQ needs no pass (the attention kernel adds into dq_acc itself). dKV: the partial is converted into the
        // accumulator (read e, write acc_e per element), then a carried partial is added in a second pass (read
        // acc_e and its own element size, write acc_e), as the backend executes this op.
        int64_t bytes = elems * (e + acc_e);
        if (!carried.empty())
          bytes += elems * (2 * acc_e + b.buffer(r, carried).bytes / elems);
        std::vector<std::string> reads = {part, "dq_acc"};
        if (!carried.empty())
          reads.push_back(carried);
        last = b.merge(r, x.compute, with({}, dkv_recv), Direction::BACKWARD, x.h0, x.h1, x.tokens,
                       carried.empty() ? 1 : 2, bytes, "bwd accumulate step " + tag_s, reads, {"dq_acc", acc});
        b.set_free(r, part, last);
        if (!carried.empty())
          b.set_free(r, carried, last);
        b.add_buffer(r, x.buf(acc, "dkv_acc", dkv_bytes, src, true, last));
        send_dep = last;
        to_send = acc;
      } else if (carried.empty()) { // nothing computed and nothing received: an empty gradient moves on
        b.add_buffer(r, x.buf(acc, "dkv_acc", 0, src, true));
        to_send = acc;
      }
      if (x.w > 1) { // the inner dKV ring: w sends bring the window's sum back to the block's holder
        const std::string in = step_name("idkv", j, t + 1);
        b.add_buffer(r, x.buf(in, "dkv_acc", dkv_bytes, x.held(j, t + 1), true));
        int g = b.next_group(r);
        int sid = b.send(r, x.in_dkv, with({}, send_dep), x.inner_peer(1), dkv_bytes, p2p_tag(IN_DKV, j * x.w + t), g,
                         "bwd inner dkv send " + tag_s, to_send);
        dkv_recv = b.recv(r, x.in_dkv, with({}, send_dep), x.inner_peer(-1), dkv_bytes, p2p_tag(IN_DKV, j * x.w + t), g,
                          "bwd inner dkv recv " + tag_s, in);
        b.set_alloc(r, in, dkv_recv);
        b.set_free(r, to_send, std::max(sid, last));
        carried = in;
      } else {
        dkv_recv = send_dep;
        carried = to_send;
      }
    }
    // The window's dKV of its outer block moves on to the next window (bf16), nw sends in all.
    if (x.nw > 1) {
      const std::string in = "odkv_" + std::to_string(j + 1);
      b.add_buffer(r, x.buf(in, j + 1 == x.nw ? "dkv" : "dkv_acc", x.B_KV, x.held(j + 1, 0), true));
      std::string outgoing = carried;
      int send_after = dkv_recv;
      if (!carried.empty() && b.buffer(r, carried).bytes > x.B_KV) { // the first window's fp32 sum, cast to bf16 for the wire
        outgoing = "odkv_cast_" + std::to_string(j);
        b.add_buffer(r, x.buf(outgoing, "dkv", x.B_KV, x.held(j, 0), true));
        send_after = b.merge(r, x.compute, with({}, dkv_recv), Direction::BACKWARD, x.h0, x.h1, x.tokens, 1,
                             (x.B_KV / e) * (4 + e), "bwd outer dkv cast " + std::to_string(j), {carried}, {outgoing});
        b.set_alloc(r, outgoing, send_after);
        b.set_free(r, carried, send_after);
        last = send_after;
      }
      int g = b.next_group(r);
      int sid = b.send(r, x.out_dkv, with({}, send_after), x.outer_peer(1), x.B_KV, p2p_tag(OUT_DKV, j), g,
                       "bwd outer dkv send " + std::to_string(j), outgoing);
      outer_dkv_recv = b.recv(r, x.out_dkv, with({}, send_after), x.outer_peer(-1), x.B_KV, p2p_tag(OUT_DKV, j), g,
                              "bwd outer dkv recv " + std::to_string(j), in);
      b.set_alloc(r, in, outer_dkv_recv);
      b.set_free(r, outgoing, std::max(sid, last));
      dkv_in = in;
      out.dkv = in, out.dkv_ready = outer_dkv_recv;
    } else {
      out.dkv = carried, out.dkv_ready = dkv_recv;
    }
    if (j + 1 < x.nw)
      local = "bokv_" + std::to_string(j + 1);
  }
  b.set_alloc(r, "dq_acc", first);
  b.set_free(r, "dq_acc", last);
  out.last = last;
  return out;
}
} // namespace

Schedule generate_loongtrain(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, kKeys);
  const Workload& wl = sc.workload;
  const int W = sc.parallel.cp, H = wl.heads, G = wl.kv_heads, D = wl.head_dim, e = wl.elem_bytes();
  const auto [d_hp, d_cp] = hybrid::degrees(sc, "head_degree", "context_degree", "loongtrain");
  const int w = hybrid::option_int(sc, "window_size", 1);
  if (d_cp % w != 0)
    throw UserError("'parallel.window_size' = " + std::to_string(w) + ": must divide context_degree (" +
                    std::to_string(d_cp) + ")");
  if (wl.mask.kind != MaskKind::CAUSAL)
    throw UserError("'workload.mask.kind' = \"" + to_string(wl.mask.kind) +
                    "\": scheme 'loongtrain' needs the causal mask (InternEvo's zigzag double ring asserts causal)");
  if (H % d_hp != 0)
    throw UserError("'parallel.head_degree' = " + std::to_string(d_hp) + ": must divide workload.heads (" +
                    std::to_string(H) + ")");
  if (G % d_hp != 0 && d_hp % G != 0)
    throw UserError("'parallel.head_degree' = " + std::to_string(d_hp) + ": workload.kv_heads (" + std::to_string(G) +
                    ") must divide it or be divisible by it (KV heads are replicated up to d_hp)");
  require_seq_divisible(sc, 2 * int64_t(W), "scheme 'loongtrain' (zigzag over d_cp = " + std::to_string(d_cp) +
                                                ", d_hp = " + std::to_string(d_hp) + ")");

  ScheduleBuilder b(sc, mask, "loongtrain", W);
  const bool bwd = sc.pass == PassKind::FWD_BWD;
  const int compute = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm_a2a = b.add_stream("comm_a2a", StreamKind::COMM);
  const int in_kv = b.add_stream("comm_inner_kv", StreamKind::COMM);
  const int out_kv = b.add_stream("comm_outer_kv", StreamKind::COMM);
  const int in_dkv = bwd ? b.add_stream("comm_inner_dkv", StreamKind::COMM) : -1;
  const int out_dkv = bwd ? b.add_stream("comm_outer_dkv", StreamKind::COMM) : -1;
  const ring::Layout L = ring::zigzag_layout(wl, d_cp);
  const int Gx = std::max(G, d_hp), hq = H / d_hp, hkv = Gx / d_hp;

  for (int r = 0; r < W; ++r) {
    const int pos = r / d_hp, hh = r % d_hp;
    std::vector<int> hp_group;
    for (int k = 0; k < d_hp; ++k)
      hp_group.push_back(pos * d_hp + k);
    const int64_t tok = ring::tokens_of(L[size_t(pos)]);
    const int g0 = hh * hkv * G / Gx;
    DoubleRing x{b, L, d_hp, d_cp, w, d_cp / w, r, pos, pos / w, pos % w, hh * hq, (hh + 1) * hq, g0,
                 std::max(g0 + 1, (hh + 1) * hkv * G / Gx), compute, in_kv, out_kv, in_dkv, out_dkv,
                 tok * hq * D * e, 2 * tok * hkv * D * e, 4 * tok * hq, tok};
    const std::vector<TokenSlice> local = hybrid::split_part(L[size_t(pos)], d_hp, hh);
    const int64_t c = ring::tokens_of(local), B_Q = c * H * D * e, B_K = c * Gx * D * e;
    auto lbuf = [&](std::string n, std::string t, int64_t bytes, int h1) {
      b.add_buffer(r, ring::make_buffer(std::move(n), std::move(t), bytes, 0, h1, local));
    };
    lbuf("q", "q", B_Q, H);
    lbuf("kv", "kv", 2 * B_K * G / Gx, G);
    lbuf("o", "o", B_Q, H);
    using Resident = std::tuple<const char*, const char*, int64_t, bool>; // name, tensor, bytes, KV heads?
    for (auto [n, t, bytes, kv] : std::initializer_list<Resident>{
             {"q_h", "q", x.B_Q, false}, {"kv_h", "kv", x.B_KV, true}, {"o_h", "o", x.B_Q, false}, {"lse_h", "lse", x.B_LSE, false}})
      b.add_buffer(r, x.buf(n, t, bytes, pos, kv));
    auto tag = [&](int t) { return t * 100000 + pos; }; // one collective per head group and step
    b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, hp_group, B_Q, tag(0), "fwd a2a q", {"q"}, {"q_h"});
    b.set_plane(r, b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, hp_group, B_K, tag(1), "fwd a2a k", {"kv"}, {"kv_h"}), 0);
    int av = b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, hp_group, B_K, tag(2), "fwd a2a v", {"kv"}, {"kv_h"});
    b.set_plane(r, av, 1);
    int last = forward(x, av);
    int ao = b.collective(r, comm_a2a, {last}, CollectiveKind::ALL_TO_ALL, hp_group, B_Q, tag(3), "fwd a2a o", {"o_h"}, {"o"});
    if (!bwd)
      continue;
    lbuf("do", "do", B_Q, H);
    lbuf("dq", "dq", B_Q, H);
    lbuf("dkv", "dkv", 2 * B_K * G / Gx, G);
    b.add_buffer(r, x.buf("do_h", "do", x.B_Q, pos, false));
    int ado = b.collective(r, comm_a2a, {ao}, CollectiveKind::ALL_TO_ALL, hp_group, B_Q, tag(4), "bwd a2a do", {"do"}, {"do_h"});
    BwdOut bo = backward(x, ado, last);
    int adq = b.collective(r, comm_a2a, {bo.last}, CollectiveKind::ALL_TO_ALL, hp_group, B_Q, tag(5), "bwd a2a dq",
                           {"dq_acc"}, {"dq"});
    b.set_free(r, "dq_acc", adq);
    b.set_plane(r, b.collective(r, comm_a2a, {bo.dkv_ready}, CollectiveKind::ALL_TO_ALL, hp_group, B_K, tag(6), "bwd a2a dk", {bo.dkv}, {"dkv"}), 0);
    b.set_plane(r, b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, hp_group, B_K, tag(7), "bwd a2a dv", {bo.dkv}, {"dkv"}), 1);
  }
  return b.finish();
}

std::vector<Json> loongtrain_variants(const Scenario& sc) {
  std::vector<Json> out;
  for (int d_hp : hybrid::divisors(sc.parallel.cp))
    for (int w : hybrid::divisors(sc.parallel.cp / d_hp))
      out.push_back(Json{{"head_degree", d_hp}, {"context_degree", sc.parallel.cp / d_hp}, {"window_size", w}});
  return out;
}

} // namespace cpsim
