// CTA classes against closed forms (full and causal squares, GQA groups) and against a brute-force oracle that
// classifies every tile of every segment cell by cell, for every mask kind, strided ranges and shared query rows.
#include "cpsim/model/kernel_grid.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace cpsim;

namespace {

Op attention(int h0, int h1, std::vector<AttnSegment> segs) {
  Op op;
  op.kind = OpKind::ATTENTION;
  op.head_begin = h0;
  op.head_end = h1;
  op.segments = std::move(segs);
  return op;
}

struct Totals {
  double full = 0, partial = 0, visible = 0, ctas = 0, heads = 0;
};

Totals totals(const std::vector<CtaClass>& cs) {
  Totals t;
  for (const auto& c : cs) {
    t.full += c.full * double(c.count);
    t.partial += c.partial * double(c.count);
    t.visible += c.visible * double(c.count);
    t.ctas += double(c.count);
    t.heads += double(c.heads) * double(c.count);
  }
  return t;
}

/** Every tile of every segment, classified by counting its visible cells one by one, summed over the op's heads. */
Totals oracle(const Op& op, const MaskGeometry& m, KernelTile t) {
  Totals o;
  for (int h : op.head_list())
    for (const auto& s : op.segments)
      for (int64_t i0 = 0; i0 < s.q.size(); i0 += t.q)
        for (int64_t j0 = 0; j0 < s.k.size(); j0 += t.k) {
          int64_t c = 0, n = 0;
          for (int64_t a = i0; a < std::min(s.q.size(), i0 + t.q); ++a)
            for (int64_t b = j0; b < std::min(s.k.size(), j0 + t.k); ++b) {
              ++n;
              c += m.visible(s.seq, h, s.q.at(a), s.k.at(b)) ? 1 : 0;
            }
          if (c == n)
            o.full += 1;
          else if (c > 0) {
            o.partial += 1;
            o.visible += double(c) / double(t.q * t.k);
          }
        }
  return o;
}

Workload workload(const Json& mask, int64_t s, int heads = 4, int kv_heads = 2) {
  return test::make_scenario(test::scenario_json("ring", 1, {s}, mask, "fwd", heads, kv_heads)).workload;
}

} // namespace

TEST_CASE("model::kernel_grid: full and causal squares, per query tile and per key tile") {
  const int64_t S = 256;
  const KernelTile t{64, 64};
  const Op op = attention(0, 4, {{0, {0, S}, {0, S}}});
  const Workload full = workload({{"kind", "full"}}, S);
  const MaskGeometry mf(full);
  auto cs = cta_classes(op, full, mf, t, GridKind::Q_PER_HEAD);
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].full == 4);
  CHECK(cs[0].partial == 0);
  CHECK(cs[0].count == 16); // 4 query tiles x 4 heads
  const Workload causal = workload({{"kind", "causal"}}, S);
  const MaskGeometry mc(causal);
  // row i: i full tiles and the diagonal, 64 * 65 / 2 of its 4096 cells visible; columns are the mirror image
  for (GridKind g : {GridKind::Q_PER_HEAD, GridKind::K_PER_HEAD}) {
    cs = cta_classes(op, causal, mc, t, g);
    REQUIRE(cs.size() == 4);
    std::map<double, CtaClass> by_full;
    for (const auto& c : cs)
      by_full[c.full] = c;
    for (int i = 0; i < 4; ++i) {
      INFO(to_string(g) << " row " << i);
      REQUIRE(by_full.count(i));
      CHECK(by_full[i].partial == 1);
      CHECK(by_full[i].visible == Approx(64.0 * 65 / 2 / 4096));
      CHECK(by_full[i].count == 4);
      CHECK(by_full[i].heads == 1);
    }
  }
}

TEST_CASE("model::kernel_grid: a KV-head grid walks the query heads of its group, however the op cuts them") {
  const int64_t S = 128;
  const Workload w = workload({{"kind", "full"}}, S, 8, 2); // 4 query heads per KV head
  const MaskGeometry m(w);
  // heads 2..7: group 0 holds heads 2 and 3, group 1 holds 4..7
  const Op op = attention(2, 8, {{0, {0, S}, {0, S}}});
  for (GridKind g : {GridKind::K_PER_KV_HEAD, GridKind::Q_PER_KV_HEAD}) {
    auto cs = cta_classes(op, w, m, {64, 64}, g);
    REQUIRE(cs.size() == 2);
    std::map<int, CtaClass> by_heads;
    for (const auto& c : cs)
      by_heads[c.heads] = c;
    CHECK(by_heads[2].full == 2 * 2);
    CHECK(by_heads[2].count == 2); // two tiles, one group
    CHECK(by_heads[4].full == 4 * 2);
    CHECK(by_heads[4].count == 2);
  }
  auto ph = cta_classes(op, w, m, {64, 64}, GridKind::K_PER_HEAD);
  REQUIRE(ph.size() == 1);
  CHECK(ph[0].count == 2 * 6);
}

TEST_CASE("model::kernel_grid: tile totals equal a cell-by-cell oracle for every mask, tile shape and grid") {
  std::vector<Json> masks = test::all_masks();
  masks.push_back({{"kind", "sliding_window"}, {"window", 100}});
  masks.push_back({{"kind", "block_sparse"}, {"block", 64}, {"density", 0.5}, {"seed", 2}});
  masks.push_back({{"kind", "lambda"}, {"window", 50}, {"sink", 8}});
  const int64_t S = 300; // not a multiple of any tile: short edge tiles on both sides
  for (const Json& mask : masks) {
    const Workload w = workload(mask, S);
    const MaskGeometry m(w);
    // a ring-like op: two key pieces for one query piece, a strided op (stripe) and a plain square
    const std::vector<Op> ops = {attention(0, 4, {{0, {150, 300}, {0, 100}}, {0, {150, 300}, {100, 300}}}),
                                 attention(1, 3, {{0, {1, 300, 3}, {0, 300, 3}}}),
                                 attention(0, 4, {{0, {0, S}, {0, S}}})};
    for (const Op& op : ops)
      for (KernelTile t : {KernelTile{64, 64}, KernelTile{128, 64}, KernelTile{64, 128}}) {
        const Totals want = oracle(op, m, t);
        for (GridKind g : {GridKind::Q_PER_HEAD, GridKind::Q_PER_KV_HEAD, GridKind::K_PER_HEAD,
                           GridKind::K_PER_KV_HEAD}) {
          INFO(mask.dump() << " tile " << t.q << "x" << t.k << " " << to_string(g) << " segments "
                           << op.segments.size());
          const Totals got = totals(cta_classes(op, w, m, t, g));
          CHECK(got.full == want.full);
          CHECK(got.partial == want.partial);
          CHECK(got.visible == Approx(want.visible));
          CHECK(got.heads == (g == GridKind::Q_PER_HEAD || g == GridKind::K_PER_HEAD ? got.ctas : got.heads));
        }
      }
  }
}

TEST_CASE("model::kernel_grid: per-head layouts give each head its own tiles") {
  Json mask{{"kind", "block_sparse"}, {"block", 32}, {"head_densities", {0.1, 0.9, 0.5, 0.3}}, {"seed", 4}};
  const Workload w = workload(mask, 256);
  const MaskGeometry m(w);
  REQUIRE(m.per_head());
  const Op op = attention(0, 4, {{0, {0, 256}, {0, 256}}});
  for (GridKind g : {GridKind::Q_PER_HEAD, GridKind::K_PER_KV_HEAD}) {
    const Totals got = totals(cta_classes(op, w, m, {64, 64}, g)), want = oracle(op, m, {64, 64});
    CHECK(got.full == want.full);
    CHECK(got.partial == want.partial);
  }
}
