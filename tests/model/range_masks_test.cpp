// DCP's range masks (lambda, shared_question, causal_blockwise): closed-form cell counts against a
// brute-force walk of the definitions in schedules.md 5.1, strided counts, totals in closed form,
// validation messages, and every existing scheme still computing each visible cell exactly once.
#include "cpsim/model/mask_geometry.hpp"
#include "schedules_test_support.hpp"

using namespace cpsim;
using Catch::Contains;

namespace {
Workload workload_with(const Json& mask, std::vector<int64_t> lens) {
  Json j{{"seq_lens", lens}, {"heads", 2}, {"kv_heads", 1}, {"head_dim", 16}, {"dtype", "bf16"}, {"mask", mask}};
  return workload_from_json(j, "workload", "");
}

/** The definitions as schedules.md 5.1 writes them (two possibly overlapping ranges, union). */
bool reference_visible(const MaskSpec& m, int64_t S, int64_t i, int64_t j) {
  auto in = [&](int64_t a, int64_t b) { return j >= a && j < b; };
  switch (m.kind) {
  case MaskKind::LAMBDA: return in(0, std::min(m.sink, i + 1)) || in(std::max<int64_t>(0, i - m.window + 1), i + 1);
  case MaskKind::SHARED_QUESTION: {
    const int64_t nq = std::max<int64_t>(1, int64_t(double(S) * m.question_fraction)), len = (S - nq) / m.answers;
    if (i < nq)
      return in(0, i + 1);
    const int64_t a = std::min((i - nq) / len, m.answers - 1);
    return in(0, nq) || in(nq + a * len, i + 1);
  }
  case MaskKind::CAUSAL_BLOCKWISE: {
    const int64_t b = m.block, bid = i / b, nb = (S + b - 1) / b;
    if (bid == 0)
      return in(0, i + 1);
    if (bid == nb - 1)
      return in(0, (bid - 1) * b) || in((bid - 1) * b, i + 1);
    return in(0, b) || in(std::max(b, i - m.local_blocks * b), i + 1);
  }
  default: return false;
  }
}

int64_t brute_cells(const MaskSpec& m, int64_t S, TokenRange q, TokenRange k) {
  int64_t c = 0;
  for (int64_t a = 0; a < q.size(); ++a)
    for (int64_t b = 0; b < k.size(); ++b)
      c += reference_visible(m, S, q.at(a), k.at(b));
  return c;
}

const std::vector<Json> kRangeMasks = {
    Json{{"kind", "lambda"}, {"sink", 5}, {"window", 17}},
    Json{{"kind", "shared_question"}, {"question_fraction", 0.25}, {"answers", 3}},
    Json{{"kind", "causal_blockwise"}, {"block", 8}, {"local_blocks", 2}},
    Json{{"kind", "lambda"}}, // DCP's defaults
    Json{{"kind", "causal_blockwise"}},
};
} // namespace

TEST_CASE("model::masks: range-mask cell counts equal a brute-force walk of the definitions") {
  for (const Json& mj : kRangeMasks)
    for (int64_t S : {1, 7, 50, 61}) {
      if (mj.value("kind", "") == "shared_question" && S < 7)
        continue;
      Workload w = workload_with(mj, {S});
      MaskGeometry g(w);
      INFO(mj.dump() << " S=" << S);
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j)
          REQUIRE(g.visible(0, i, j) == reference_visible(w.mask, S, i, j));
      for (int64_t qa = 0; qa < S; qa += 7)
        for (int64_t qb = qa + 1; qb <= S; qb += 11)
          for (int64_t ka = 0; ka < S; ka += 5)
            for (int64_t kb = ka; kb <= S; kb += 13)
              REQUIRE(g.cells(0, {qa, qb}, {ka, kb}) == brute_cells(w.mask, S, {qa, qb}, {ka, kb}));
      for (int64_t stride : {2, 3})
        for (int64_t off = 0; off < stride && off < S; ++off) {
          TokenRange q{off, S, stride}, k{(off + 1) % stride, S, stride};
          q = sub_range(q, 0, q.size()); // end = last + 1
          k = sub_range(k, 0, k.size());
          REQUIRE(g.cells(0, q, k) == brute_cells(w.mask, S, q, k));
        }
    }
}

TEST_CASE("model::masks: range-mask tiles are classified by their cells (full, partial, untouched)") {
  for (const Json& mj : {kRangeMasks[0], kRangeMasks[1], kRangeMasks[2]}) {
    const int64_t S = 61;
    Workload w = workload_with(mj, {S});
    MaskGeometry g(w);
    INFO(mj.dump());
    for (int64_t tm : {4, 8})
      for (auto [q, k] : {std::pair<TokenRange, TokenRange>{{0, S}, {0, S}}, {{13, 50}, {3, 40}}, {{30, 61}, {0, 30}}}) {
        TileCount expect;
        for (int64_t a = q.begin; a < q.end; a += tm)
          for (int64_t b = k.begin; b < k.end; b += tm) {
            TokenRange qt{a, std::min(a + tm, q.end)}, kt{b, std::min(b + tm, k.end)};
            const int64_t c = brute_cells(w.mask, S, qt, kt);
            expect.full += c == qt.size() * kt.size();
            expect.partial += c > 0 && c < qt.size() * kt.size();
          }
        TileCount got = g.tiles(0, q, k, tm, tm);
        CHECK(got.full == expect.full);
        CHECK(got.partial == expect.partial);
      }
  }
}

TEST_CASE("model::masks: range-mask totals in closed form") {
  SECTION("lambda: a causal triangle up to the window, then sink + window per row") {
    const int64_t S = 300, sink = 10, win = 100;
    MaskGeometry g(workload_with(Json{{"kind", "lambda"}, {"sink", sink}, {"window", win}}, {S}));
    // rows i < win see i+1 keys; later rows see win band keys plus min(sink, i-win+1) sink keys
    int64_t expect = win * (win + 1) / 2;
    for (int64_t i = win; i < S; ++i)
      expect += win + std::min(sink, i - win + 1);
    CHECK(g.total_cells(0) == expect);
    CHECK(g.cells(0, {win + sink, S}, {0, sink}) == (S - win - sink) * sink);
  }
  SECTION("shared_question: question triangle, each answer sees the question and its own prefix") {
    const int64_t S = 103, nq = 20, len = (S - nq) / 4, last = S - nq - 3 * len;
    MaskGeometry g(workload_with(Json{{"kind", "shared_question"}}, {S}));
    auto tri = [](int64_t n) { return n * (n + 1) / 2; };
    CHECK(g.total_cells(0) == tri(nq) + 3 * (len * nq + tri(len)) + last * nq + tri(last));
    CHECK(g.cells(0, {nq + len, nq + 2 * len}, {nq, nq + len}) == 0); // answers never see each other
  }
  SECTION("causal_blockwise: middle blocks see block 0 and a local band") {
    const int64_t b = 16, S = 6 * b;
    MaskGeometry g(workload_with(Json{{"kind", "causal_blockwise"}, {"block", b}, {"local_blocks", 1}}, {S}));
    CHECK(g.cells(0, {3 * b, 4 * b}, {b, 2 * b}) == 0);         // beyond the band
    CHECK(g.cells(0, {3 * b, 4 * b}, {0, b}) == b * b);         // block 0 always
    CHECK(g.cells(0, {5 * b, 6 * b}, {0, 5 * b}) == 5 * b * b); // the last block sees everything before it
  }
}

TEST_CASE("model::masks: range-mask keys are validated with key, value and reason") {
  auto bad = [](const Json& mask, std::vector<int64_t> lens = {64}) { return workload_with(mask, std::move(lens)); };
  CHECK_THROWS_WITH(bad(Json{{"kind", "lambda"}, {"window", 0}}), Contains("workload.mask.window") && Contains("at least 1"));
  CHECK_THROWS_WITH(bad(Json{{"kind", "shared_question"}, {"question_fraction", 1.0}}),
                    Contains("workload.mask.question_fraction") && Contains("strictly between"));
  CHECK_THROWS_WITH(bad(Json{{"kind", "shared_question"}, {"answers", 0}}), Contains("workload.mask.answers"));
  CHECK_THROWS_WITH(bad(Json{{"kind", "causal_blockwise"}, {"density", 0.5}}), Contains("workload.mask.density"));
  Workload w = workload_with(Json{{"kind", "shared_question"}, {"answers", 8}}, {64, 5});
  CHECK_THROWS_WITH(MaskGeometry(w), Contains("workload.seq_lens[1]") && Contains("too short"));
  // the resolved workload writes the defaults back, and reads back equal
  Workload d = workload_with(Json{{"kind", "lambda"}}, {64});
  CHECK(workload_to_json(d)["mask"] == Json{{"kind", "lambda"}, {"sink", 64}, {"window", 4096}});
}

TEST_CASE("model::masks: every existing scheme computes each range-mask cell exactly once") {
  for (const Json& mask : {kRangeMasks[0], kRangeMasks[1], kRangeMasks[2]})
    for (const std::string scheme : {"ring", "zigzag", "ulysses", "te_p2p", "te_allgather", "te_a2a", "usp"}) {
      Json opts = scheme == "usp" ? Json{{"ulysses_degree", 2}} : Json::object();
      Scenario sc = test::scenario_with(scheme, 2, {64, 96}, mask, "fwd_bwd", opts, 4, 2);
      INFO(scheme << " " << mask.dump());
      Schedule s;
      try {
        s = generate_schedule(sc);
      } catch (const UserError& e) { // a scheme may refuse a mask, but must say which key
        CHECK_THAT(e.what(), Contains("workload.mask"));
        continue;
      }
      test::check_exactly_once(s, sc);
    }
}
