// MaskGeometry's closed forms against brute force over every cell, for every mask kind.
#include "cpsim/model/mask_geometry.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace cpsim;

namespace {
Workload workload_with(const Json& mask, std::vector<int64_t> lens) {
  return workload_from_json(Json{{"seq_lens", lens}, {"heads", 2}, {"kv_heads", 1}, {"head_dim", 8}, {"dtype", "bf16"}, {"mask", mask}},
                            "workload", "");
}

int64_t brute_cells(const MaskGeometry& m, int seq, TokenRange q, TokenRange k) {
  int64_t c = 0;
  for (int64_t i = q.begin; i < q.end; ++i)
    for (int64_t j = k.begin; j < k.end; ++j)
      c += m.visible(seq, i, j);
  return c;
}
} // namespace

TEST_CASE("model::MaskGeometry: cells equal brute force for every mask kind") {
  std::mt19937 rng(12345);
  for (const Json& mask : test::all_masks()) {
    Workload w = workload_with(mask, {97, 130});
    MaskGeometry m(w);
    for (int trial = 0; trial < 300; ++trial) {
      int seq = trial % 2;
      int64_t n = w.seq_lens[size_t(seq)];
      std::uniform_int_distribution<int64_t> d(0, n);
      int64_t a = d(rng), b = d(rng), c = d(rng), e = d(rng);
      TokenRange q{std::min(a, b), std::max(a, b)}, k{std::min(c, e), std::max(c, e)};
      INFO("mask " << mask.dump() << " q [" << q.begin << "," << q.end << ") k [" << k.begin << "," << k.end << ")");
      REQUIRE(m.cells(seq, q, k) == brute_cells(m, seq, q, k));
    }
  }
}

TEST_CASE("model::MaskGeometry: tiles split into full and partial as brute force says") {
  for (const Json& mask : test::all_masks()) {
    Workload w = workload_with(mask, {200});
    MaskGeometry m(w);
    TokenRange q{10, 190}, k{0, 170};
    const int64_t tm = 32, tn = 16;
    int64_t full = 0, partial = 0;
    for (int64_t i = q.begin; i < q.end; i += tm)
      for (int64_t j = k.begin; j < k.end; j += tn) {
        TokenRange qt{i, std::min(q.end, i + tm)}, kt{j, std::min(k.end, j + tn)};
        int64_t c = brute_cells(m, 0, qt, kt);
        if (c == qt.size() * kt.size())
          ++full;
        else if (c > 0)
          ++partial;
      }
    TileCount t = m.tiles(0, q, k, tm, tn);
    INFO("mask " << mask.dump());
    CHECK(t.full == full);
    CHECK(t.partial == partial);
  }
}

TEST_CASE("model::MaskGeometry: causal closed form of a whole sequence") {
  Workload w = workload_with(Json{{"kind", "causal"}}, {1000});
  MaskGeometry m(w);
  CHECK(m.total_cells(0) == 1000 * 1001 / 2);
}

TEST_CASE("model::MaskGeometry: random layouts are deterministic, keep the diagonal and follow the density") {
  BlockLayout a = random_block_layout(128 * 64, 128, 0.25, 99, 0, false);
  BlockLayout b = random_block_layout(128 * 64, 128, 0.25, 99, 0, false);
  CHECK(a.bits == b.bits);
  int64_t kept = 0;
  for (int64_t i = 0; i < a.n_blocks; ++i) {
    CHECK(a.at(i, i));
    for (int64_t j = 0; j < a.n_blocks; ++j)
      kept += a.at(i, j);
  }
  double density = double(kept - a.n_blocks) / double(a.n_blocks * a.n_blocks - a.n_blocks);
  CHECK(density == Approx(0.25).margin(0.03));
  BlockLayout c = random_block_layout(128 * 64, 128, 0.25, 100, 0, false);
  CHECK(c.bits != a.bits);
}

TEST_CASE("model::MaskGeometry: layout files are read and checked") {
  Workload w = workload_with(Json{{"kind", "block_sparse"}, {"block", 16}, {"layout_file", std::string(CPSIM_TEST_DATA) + "/layout_2x3.json"}},
                             {48, 40});
  MaskGeometry m(w);
  CHECK(m.layout(0).at(0, 0));
  CHECK(m.layout(0).at(2, 1));
  CHECK_FALSE(m.layout(0).at(1, 2));
  CHECK(m.cells(0, {0, 48}, {0, 48}) == 5 * 256); // blocks (0,0) (1,0) (1,1) (2,1) (2,2)
  Workload bad = w;
  bad.seq_lens = {48, 64};
  CHECK_THROWS_WITH(MaskGeometry(bad), Catch::Contains("layouts[1]"));
}

TEST_CASE("model::MaskGeometry: tile counts equal brute force for random, strided and windowed rectangles") {
  std::mt19937 rng(777);
  for (const Json& mask : test::all_masks()) {
    Workload w = workload_with(mask, {300});
    MaskGeometry m(w);
    for (int trial = 0; trial < 60; ++trial) {
      std::uniform_int_distribution<int64_t> pos(0, 299), stride(1, 4), tile(1, 40);
      auto range = [&] {
        int64_t s = stride(rng), a = pos(rng), b = pos(rng);
        TokenRange r{std::min(a, b), std::max(a, b) + 1, 1};
        r.stride = s;
        return sub_range(r, 0, r.size());
      };
      TokenRange q = range(), k = range();
      const int64_t tm = tile(rng), tn = tile(rng);
      int64_t full = 0, partial = 0;
      for (int64_t i = 0; i < q.size(); i += tm)
        for (int64_t j = 0; j < k.size(); j += tn) {
          int64_t c = 0, n = 0;
          for (int64_t a = i; a < std::min(q.size(), i + tm); ++a)
            for (int64_t b = j; b < std::min(k.size(), j + tn); ++b, ++n)
              c += m.visible(0, q.at(a), k.at(b));
          full += c == n;
          partial += c > 0 && c < n;
        }
      TileCount t = m.tiles(0, q, k, tm, tn);
      INFO("mask " << mask.dump() << " q " << q.begin << ":" << q.end << ":" << q.stride << " k " << k.begin << ":"
                   << k.end << ":" << k.stride << " tiles " << tm << "x" << tn);
      REQUIRE(t.full == full);
      REQUIRE(t.partial == partial);
    }
  }
}
