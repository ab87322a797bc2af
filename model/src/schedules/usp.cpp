// USP / yunchang LongContextAttention (schedules.md 4.2): W = u x r. An all-to-all over each
// Ulysses group (u contiguous ranks, intra-node) turns u token parts x all heads into the group's
// ring tokens x H/u heads; a zhuzilin ring (basic, zigzag or stripe) then runs over each ring group
// (r ranks strided by u); O goes back through the reverse all-to-all. The backward mirrors it.
#include "hybrid_degrees.hpp"
#include "ring_program.hpp"

#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>

namespace cpsim {

namespace {
const std::vector<std::string> kKeys = {"ulysses_degree", "ring_degree", "ring_variant"};
}

Schedule generate_usp(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, kKeys);
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  const auto [u, nr] = hybrid::degrees(sc, "ulysses_degree", "ring_degree", "usp");
  std::string variant = "zigzag";
  if (sc.parallel.options.contains("ring_variant")) {
    const Json& v = sc.parallel.options.at("ring_variant");
    if (!v.is_string() || (v != "basic" && v != "zigzag" && v != "stripe"))
      throw UserError("'parallel.ring_variant' = " + v.dump() + ": must be one of \"basic\", \"zigzag\", \"stripe\"");
    variant = v.get<std::string>();
  }
  if (H % u != 0)
    throw UserError("'parallel.ulysses_degree' = " + std::to_string(u) + ": must divide workload.heads (" +
                    std::to_string(H) + ")");
  if (G % u != 0 && u % G != 0)
    throw UserError("'parallel.ulysses_degree' = " + std::to_string(u) + ": workload.kv_heads (" + std::to_string(G) +
                    ") must divide it or be divisible by it (KV heads are replicated up to the degree)");
  const std::string why = "scheme 'usp' (" + variant + " ring, u = " + std::to_string(u) + ", r = " + std::to_string(nr) + ")";
  if (variant == "stripe")
    ring::require_stripe_mask(sc, why);
  require_seq_divisible(sc, variant == "zigzag" ? 2 * int64_t(W) : W, why);

  ScheduleBuilder b(sc, mask, "usp", W);
  ring::RingSpec spec;
  spec.compute = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm_a2a = b.add_stream("comm_a2a", StreamKind::COMM);
  spec.comm_kv = b.add_stream("comm_kv", StreamKind::COMM);
  spec.comm_dkv = sc.pass == PassKind::FWD_BWD ? b.add_stream("comm_dkv", StreamKind::COMM) : -1;
  spec.layout = variant == "basic"    ? ring::contiguous_layout(w, nr)
                : variant == "zigzag" ? ring::zigzag_layout(w, nr)
                                      : ring::stripe_layout(w, nr);
  spec.q = "q_h", spec.kv = "kv_h", spec.o = "o_h", spec.lse = "lse_h", spec.dout = "do_h", spec.dq = "dq_h";
  spec.prefix = "ring_";
  const int Gx = std::max(G, u), hq = H / u, hkv = Gx / u; // KV heads after replication

  for (int r = 0; r < W; ++r) {
    const int rr = r / u, uu = r % u; // Ulysses groups contiguous, ring groups strided by u
    std::vector<int> a2a_group;
    for (int k = 0; k < u; ++k)
      a2a_group.push_back(rr * u + k);
    spec.members.clear();
    for (int k = 0; k < nr; ++k)
      spec.members.push_back(k * u + uu);
    spec.head_begin = uu * hq, spec.head_end = spec.head_begin + hq;
    spec.kv_head_begin = uu * hkv * G / Gx;
    spec.kv_head_end = std::max(spec.kv_head_begin + 1, (uu + 1) * hkv * G / Gx);
    const std::vector<TokenSlice> local = hybrid::split_part(spec.layout[size_t(rr)], u, uu);
    const int64_t c = ring::tokens_of(local), B_Q = c * H * D * e, B_K = c * Gx * D * e;
    auto buf = [&](std::string n, std::string t, int64_t bytes, int h1) {
      b.add_buffer(r, ring::make_buffer(std::move(n), std::move(t), bytes, 0, h1, local));
    };
    buf("q", "q", B_Q, H);
    buf("kv", "kv", 2 * B_K * G / Gx, G);
    buf("o", "o", B_Q, H);
    ring::add_resident_buffers(b, spec, rr); // the head-sharded q_h, kv_h, o_h, lse_h (, do_h)
    auto tag = [&](int t) { return t * 100000 + rr; }; // one collective per Ulysses group and step
    b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, a2a_group, B_Q, tag(0), "fwd a2a q", {"q"}, {"q_h"});
    b.set_plane(r, b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, a2a_group, B_K, tag(1), "fwd a2a k", {"kv"}, {"kv_h"}), 0);
    int av = b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, a2a_group, B_K, tag(2), "fwd a2a v", {"kv"}, {"kv_h"});
    b.set_plane(r, av, 1);
    spec.start_deps = {av};
    int last = ring::emit_forward(b, spec, rr);
    int ao = b.collective(r, comm_a2a, {last}, CollectiveKind::ALL_TO_ALL, a2a_group, B_Q, tag(3), "fwd a2a o", {"o_h"}, {"o"});
    if (sc.pass == PassKind::FWD)
      continue;
    buf("do", "do", B_Q, H);
    buf("dq", "dq", B_Q, H);
    buf("dkv", "dkv", 2 * B_K * G / Gx, G);
    int ado = b.collective(r, comm_a2a, {ao}, CollectiveKind::ALL_TO_ALL, a2a_group, B_Q, tag(4), "bwd a2a do", {"do"}, {"do_h"});
    spec.start_deps = {ado};
    ring::BackwardResult br = ring::emit_backward(b, spec, rr, last);
    b.collective(r, comm_a2a, {br.last_compute}, CollectiveKind::ALL_TO_ALL, a2a_group, B_Q, tag(5), "bwd a2a dq",
                 {"dq_h"}, {"dq"});
    b.set_plane(r, b.collective(r, comm_a2a, {br.last_compute, br.dkv_ready}, CollectiveKind::ALL_TO_ALL, a2a_group, B_K,
                                tag(6), "bwd a2a dk", {br.dkv}, {"dkv"}), 0);
    b.set_plane(r, b.collective(r, comm_a2a, {}, CollectiveKind::ALL_TO_ALL, a2a_group, B_K, tag(7), "bwd a2a dv", {br.dkv}, {"dkv"}), 1);
  }
  return b.finish();
}

std::vector<Json> usp_variants(const Scenario& sc) {
  std::vector<Json> out;
  for (int u : hybrid::divisors(sc.parallel.cp)) {
    const int nr = sc.parallel.cp / u;
    std::vector<std::string> variants = {"basic"}; // one ring rank: the variant makes no difference
    if (nr > 1) {
      variants.push_back("zigzag");
      if (sc.workload.mask.kind == MaskKind::CAUSAL)
        variants.push_back("stripe");
    }
    for (const auto& v : variants)
      out.push_back(Json{{"ulysses_degree", u}, {"ring_degree", nr}, {"ring_variant", v}});
  }
  return out;
}

} // namespace cpsim
