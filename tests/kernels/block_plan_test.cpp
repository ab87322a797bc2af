// CPU tests of the kernels' planner: every visible cell of the rectangles is computed exactly once,
// "full" tiles are really fully visible, empty tiles are dropped, and the backward lists are the
// exact transpose of the forward ones. No GPU needed.
#include "cpsim/kernels/block_plan.hpp"
#include "cpsim/model/errors.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>

using namespace cpsim::kernels;

namespace {

/** Checks the plan's forward lists of slot `slot` against brute force over the segments. */
void check_exact_cover(const KernelPlan& p, const std::vector<PlanSegment>& segs, const MaskDesc& m, int slot = 0) {
  std::map<std::pair<int64_t, int64_t>, int> hits; // (q row, k row) -> times computed as visible
  const size_t nq = p.q_tiles.size();
  for (size_t qt = 0; qt < nq; ++qt) {
    const size_t item = size_t(slot) * nq + qt;
    const TileRange& q = p.q_tiles[qt];
    for (int32_t e = p.fwd.offsets[item]; e < p.fwd.offsets[item + 1]; ++e) {
      const TileRange& k = p.k_tiles[size_t(p.fwd.idx[size_t(e)])];
      const bool full = e - p.fwd.offsets[item] < p.fwd.n_full[item];
      if (full)
        REQUIRE(k.n == kTileRows);
      for (int i = 0; i < q.n; ++i)
        for (int j = 0; j < k.n; ++j) {
          const bool vis = m.visible(q.seq, q.pos(i), k.pos(j));
          if (full)
            REQUIRE(vis);
          if (vis)
            ++hits[{q.row0 + i, k.row0 + j}];
        }
    }
  }
  int64_t expected = 0;
  for (const auto& s : segs)
    for (int64_t i = 0; i < s.q_n; ++i)
      for (int64_t j = 0; j < s.k_n; ++j)
        if (m.visible(s.seq, s.q_pos0 + i * s.q_stride, s.k_pos0 + j * s.k_stride)) {
          ++expected;
          auto it = hits.find({s.q_row0 + i, s.k_row0 + j});
          REQUIRE(it != hits.end());
          REQUIRE(it->second == 1);
        }
  REQUIRE(int64_t(hits.size()) == expected); // nothing computed outside the segments
}

/** The launch orders are permutations with non-increasing work. */
void check_order(const std::vector<int32_t>& order, const TileLists& l, size_t n_tiles, int slots) {
  REQUIRE(order.size() == n_tiles);
  std::vector<int64_t> work;
  std::vector<bool> seen(n_tiles, false);
  for (int32_t t : order) {
    REQUIRE(!seen[size_t(t)]);
    seen[size_t(t)] = true;
    int64_t w = 0;
    for (int s = 0; s < slots; ++s)
      w += l.count(int64_t(size_t(s) * n_tiles + size_t(t)));
    work.push_back(w);
  }
  REQUIRE(std::is_sorted(work.rbegin(), work.rend()));
}

void check_transpose(const KernelPlan& p) {
  check_order(p.q_order, p.fwd, p.q_tiles.size(), p.head_slots);
  check_order(p.k_order, p.bwd, p.k_tiles.size(), p.head_slots);
  std::map<std::tuple<int, int32_t, int32_t>, bool> fwd, bwd;
  const size_t nq = p.q_tiles.size(), nk = p.k_tiles.size();
  for (int s = 0; s < p.head_slots; ++s) {
    for (size_t q = 0; q < nq; ++q) {
      const size_t it = size_t(s) * nq + q;
      for (int32_t e = p.fwd.offsets[it]; e < p.fwd.offsets[it + 1]; ++e)
        fwd[{s, int32_t(q), p.fwd.idx[size_t(e)]}] = e - p.fwd.offsets[it] < p.fwd.n_full[it];
    }
    for (size_t k = 0; k < nk; ++k) {
      const size_t it = size_t(s) * nk + k;
      for (int32_t e = p.bwd.offsets[it]; e < p.bwd.offsets[it + 1]; ++e)
        bwd[{s, p.bwd.idx[size_t(e)], int32_t(k)}] = e - p.bwd.offsets[it] < p.bwd.n_full[it];
    }
  }
  REQUIRE(fwd == bwd);
}

PlanSegment square(int64_t n, int seq = 0, int64_t row0 = 0) { return {seq, row0, 0, 1, n, row0, 0, 1, n}; }

MaskDesc with_layout(int64_t len, int64_t block, double density, uint64_t seed, bool causal) {
  MaskDesc m;
  m.causal = causal;
  m.layout_block = block;
  const int64_t nb = (len + block - 1) / block;
  m.layouts.push_back(random_layout(nb, density, seed, causal));
  m.layout_n_blocks.push_back(nb);
  return m;
}

} // namespace

TEST_CASE("full mask: tiles of 64, the short last key tile is partial") {
  const auto p = plan_segments({square(150)}, MaskDesc{});
  REQUIRE(p.q_tiles.size() == 3);
  REQUIRE(p.q_tiles[2].n == 22);
  REQUIRE(p.full_pairs() == 3 * 2);
  REQUIRE(p.partial_pairs() == 3);
  check_exact_cover(p, {square(150)}, MaskDesc{});
  check_transpose(p);
}

TEST_CASE("causal top-left: strictly-lower tiles full, diagonal tiles partial, upper tiles dropped") {
  MaskDesc m;
  m.causal = true;
  const auto p = plan_segments({square(200)}, m); // tiles 64, 64, 64, 8
  REQUIRE(p.full_pairs() == 0 + 1 + 2 + 3);
  REQUIRE(p.partial_pairs() == 4);
  check_exact_cover(p, {square(200)}, m);
  check_transpose(p);
}

TEST_CASE("causal bottom-right: queries placed at the end of the keys") {
  MaskDesc m;
  m.causal = true;
  const PlanSegment s{0, 0, 130, 1, 70, 0, 0, 1, 200}; // 70 queries at positions 130..199 over 200 keys
  const auto p = plan_segments({s}, m);
  check_exact_cover(p, {s}, m);
  // query tile 0 (positions 130..193) sees key tiles 0, 1 fully and 2, 3 partly
  REQUIRE(p.fwd.count(0) == 4);
  REQUIRE(p.fwd.n_full[0] == 2);
}

TEST_CASE("sliding window drops tiles beyond the window") {
  MaskDesc m;
  m.causal = true;
  m.window = 64;
  const auto p = plan_segments({square(320)}, m);
  check_exact_cover(p, {square(320)}, m);
  check_transpose(p);
  for (size_t q = 0; q < p.q_tiles.size(); ++q)
    REQUIRE(p.fwd.count(int64_t(q)) == (q == 0 ? 1 : 2)); // its own tile and the one before
  REQUIRE(p.full_pairs() == 0);
}

TEST_CASE("explicit key ranges per query range meet in one list; shared key rows in one backward list") {
  // DCP-like: queries [0,100) see keys [0,40) and keys [300,380) of the buffer (positions 500..579)
  const std::vector<PlanSegment> segs = {{0, 0, 600, 1, 100, 0, 0, 1, 40}, {0, 0, 600, 1, 100, 300, 500, 1, 80},
                                         {0, 100, 700, 1, 30, 300, 500, 1, 80}};
  MaskDesc m;
  m.causal = true;
  const auto p = plan_segments(segs, m);
  check_exact_cover(p, segs, m);
  check_transpose(p);
  REQUIRE(p.q_tiles.size() == 3); // [0,64), [64,100), [100,130)
  REQUIRE(p.fwd.count(0) == 3);   // key tiles [0,40), [300,364), [364,380)
}

TEST_CASE("strided (stripe) positions: causal on the original positions") {
  // rank 1 of 4 holds positions 1, 5, 9, ...; its queries against rank 2's keys 2, 6, 10, ... (strictly lower)
  const PlanSegment s{0, 0, 1, 4, 90, 0, 2, 4, 90};
  MaskDesc m;
  m.causal = true;
  const auto p = plan_segments({s}, m);
  check_exact_cover(p, {s}, m);
  check_transpose(p);
}

TEST_CASE("block-sparse layouts of 64 and 128, with and without causal, random segments") {
  std::mt19937_64 rng(7);
  for (int64_t block : {64, 128})
    for (bool causal : {false, true})
      for (int rep = 0; rep < 3; ++rep) {
        const int64_t len = 200 + int64_t(rng() % 300);
        const MaskDesc m = with_layout(len, block, 0.4, rng(), causal);
        const int64_t q0 = int64_t(rng() % 50), k0 = int64_t(rng() % 50);
        const PlanSegment s{0, 0, q0, 1, len - q0, 7, k0, 1, len - k0};
        const auto p = plan_segments({s}, m);
        check_exact_cover(p, {s}, m);
        check_transpose(p);
      }
}

TEST_CASE("overlapping segments and inconsistent positions are user errors") {
  REQUIRE_THROWS_AS(plan_segments({square(100), square(100)}, MaskDesc{}), cpsim::UserError);
  const std::vector<PlanSegment> bad = {{0, 0, 0, 1, 50, 0, 0, 1, 50}, {0, 0, 10, 1, 50, 100, 0, 1, 50}};
  REQUIRE_THROWS_AS(plan_segments(bad, MaskDesc{}), cpsim::UserError);
}

TEST_CASE("masks whose layouts do not cover the positions are user errors") {
  MaskDesc m = with_layout(100, 64, 0.5, 1, false); // 2 x 2 blocks: positions 0..127
  REQUIRE_NOTHROW(plan_segments({square(128)}, m));
  REQUIRE_THROWS_AS(plan_segments({square(129)}, m), cpsim::UserError);
  REQUIRE_THROWS_AS(plan_segments({{1, 0, 0, 1, 10, 0, 0, 1, 10}}, m), cpsim::UserError); // no layout for sequence 1
  REQUIRE_THROWS_AS(block_lists_from_mask(m, {100, 50}, 64), cpsim::UserError);
  m.layouts[0].pop_back();
  REQUIRE_THROWS_AS(plan_segments({square(10)}, m), cpsim::UserError);
  MaskDesc w;
  w.window = -1;
  REQUIRE_THROWS_AS(plan_segments({square(10)}, w), cpsim::UserError);
}

TEST_CASE("block lists from a causal mask: earlier blocks full, the diagonal partial") {
  MaskDesc m;
  m.causal = true;
  const BlockLists b = block_lists_from_mask(m, {300, 128}, 128, 2);
  REQUIRE(b.blocks(0) == 3);
  REQUIRE(b.full[size_t(b.index(0, 1, 2))] == std::vector<int32_t>{0, 1});
  REQUIRE(b.partial[size_t(b.index(0, 1, 2))] == std::vector<int32_t>{2});
  REQUIRE(b.full[size_t(b.index(1, 0, 0))].empty());
  REQUIRE(b.partial[size_t(b.index(1, 0, 0))] == std::vector<int32_t>{0});
  const BlockLists t = transpose(b);
  REQUIRE(t.full[size_t(t.index(0, 0, 0))] == std::vector<int32_t>{1, 2});
  REQUIRE(t.partial[size_t(t.index(0, 0, 0))] == std::vector<int32_t>{0});
  const BlockLists tt = transpose(t);
  REQUIRE(tt.full == b.full);
  REQUIRE(tt.partial == b.partial);
  REQUIRE_THROWS_AS(block_lists_from_mask(m, {300}, 96), cpsim::UserError);
}

TEST_CASE("a packed varlen batch of block lists plans exactly the layout's cells") {
  std::mt19937_64 rng(11);
  for (int64_t block : {64, 128}) {
    const std::vector<int64_t> lens = {300, 77, 256};
    MaskDesc m;
    m.causal = true;
    m.layout_block = block;
    for (int64_t len : lens) {
      const int64_t nb = (len + block - 1) / block;
      m.layouts.push_back(random_layout(nb, 0.5, rng(), true));
      m.layout_n_blocks.push_back(nb);
    }
    const BlockLists b = block_lists_from_mask(m, lens, int(block));
    const KernelPlan p = plan_block_lists(b, m);
    std::vector<PlanSegment> segs;
    int64_t row = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      segs.push_back({int(s), row, 0, 1, lens[s], row, 0, 1, lens[s]});
      row += lens[s];
    }
    check_exact_cover(p, segs, m);
    check_transpose(p);
  }
}

TEST_CASE("random layouts keep the diagonal and approach the density") {
  const auto bits = random_layout(200, 0.25, 3, false);
  int64_t on = 0;
  for (int64_t r = 0; r < 200; ++r) {
    REQUIRE(bits[size_t(r * 200 + r)] == 1);
    for (int64_t c = 0; c < 200; ++c)
      on += bits[size_t(r * 200 + c)];
  }
  REQUIRE(double(on) / (200.0 * 200.0) == Approx(0.25 + 0.75 / 200).margin(0.01));
  REQUIRE_THROWS_AS(random_layout(4, 0.0, 1, false), cpsim::UserError);
}

namespace {
/** Per-row key intervals of a lambda mask: the first `sink` keys and the `window` keys up to the row. */
std::vector<int32_t> lambda_ranges(int64_t len, int64_t sink, int64_t window) {
  std::vector<int32_t> r;
  for (int64_t i = 0; i < len; ++i) {
    const int64_t lo = std::max<int64_t>(0, i - window + 1);
    const int64_t s = std::min(sink, lo);
    r.insert(r.end(), {0, int32_t(s), int32_t(std::max(lo, s)), int32_t(i + 1)});
  }
  return r;
}

/** Every listed tile holds at least one visible cell (contiguous positions: the row-wise test is exact). */
void check_no_empty_tile(const KernelPlan& p, const MaskDesc& m) {
  const size_t nq = p.q_tiles.size();
  for (size_t qt = 0; qt < nq; ++qt)
    for (int32_t e = p.fwd.offsets[qt]; e < p.fwd.offsets[qt + 1]; ++e) {
      const TileRange& q = p.q_tiles[qt];
      const TileRange& k = p.k_tiles[size_t(p.fwd.idx[size_t(e)])];
      bool any = false;
      for (int i = 0; i < q.n && !any; ++i)
        for (int j = 0; j < k.n && !any; ++j)
          any = m.visible(q.seq, q.pos(i), k.pos(j));
      REQUIRE(any);
    }
}
} // namespace

TEST_CASE("per-row key intervals (DCP's range masks): exact cover, no empty tile, full tiles only where certain") {
  std::mt19937_64 rng(5);
  SECTION("lambda: sink and sliding band, two sequences packed, one DCP-like piece of rows") {
    MaskDesc m;
    m.row_ranges = {lambda_ranges(400, 64, 150), lambda_ranges(333, 10, 70)};
    const std::vector<PlanSegment> segs = {square(400), {1, 400, 0, 1, 333, 400, 0, 1, 333},
                                           {1, 733, 100, 1, 120, 900, 0, 1, 200}};
    const auto p = plan_segments(segs, m);
    check_exact_cover(p, segs, m);
    check_transpose(p);
    check_no_empty_tile(p, m);
    REQUIRE(p.full_pairs() > 0); // the sink's and the band's interior tiles need no masking
  }
  SECTION("random intervals, strided positions") {
    for (int rep = 0; rep < 4; ++rep) {
      const int64_t len = 150 + int64_t(rng() % 200);
      MaskDesc m;
      m.causal = rep % 2 == 1;
      std::vector<int32_t> r;
      for (int64_t i = 0; i < len; ++i) {
        int32_t a = int32_t(rng() % uint64_t(len)), b = int32_t(rng() % uint64_t(len));
        int32_t c = int32_t(rng() % uint64_t(len)), d = int32_t(rng() % uint64_t(len));
        r.insert(r.end(), {std::min(a, b), std::max(a, b), std::min(c, d), std::max(c, d)});
      }
      m.row_ranges = {r};
      const PlanSegment s{0, 0, 1, 2, (len - 1) / 2, 0, 0, 3, len / 3};
      const auto p = plan_segments({s}, m);
      check_exact_cover(p, {s}, m);
      check_transpose(p);
    }
  }
  SECTION("block lists of 128 from the intervals plan exactly their cells") {
    MaskDesc m;
    m.causal = true;
    m.row_ranges = {lambda_ranges(700, 128, 200)};
    const BlockLists b = block_lists_from_mask(m, {700}, 128);
    const KernelPlan p = plan_block_lists(b, m);
    check_exact_cover(p, {square(700)}, m);
    check_transpose(p);
    check_no_empty_tile(p, m);
  }
  SECTION("intervals that do not reach a position are a user error naming the sequence") {
    MaskDesc m;
    m.row_ranges = {lambda_ranges(100, 8, 20)};
    REQUIRE_NOTHROW(plan_segments({square(100)}, m));
    REQUIRE_THROWS_WITH(plan_segments({square(101)}, m), Catch::Contains("row ranges of sequence 0"));
    REQUIRE_THROWS_AS(block_lists_from_mask(m, {120}, 64), cpsim::UserError);
    m.row_ranges[0].pop_back();
    REQUIRE_THROWS_AS(plan_segments({square(10)}, m), cpsim::UserError);
  }
}
