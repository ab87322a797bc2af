// Exec plans of the sparse and gather-style schedules (PIT, DSV, TE p2p, CQS, DCP): the plan builds, every op maps
// to buffer rows and heads, the sizes the IR declares equal what the backend moves, and every query row is covered.
#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/micro_tiles.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <set>

using namespace cpsim;
using namespace cpsim::backend;

namespace {
struct Planned {
  Scenario sc;
  Schedule s;
  ExecPlan plan;
};

Planned planned(const Json& j) {
  Planned p;
  p.sc = test::make_scenario(j);
  p.s = generate_schedule(p.sc);
  p.plan = make_exec_plan(p.s, p.sc.workload);
  return p;
}

Json pit_json(int cp, const std::string& pass, Json mask, int64_t g, int heads = 4, int kv_heads = 2) {
  Json j = test::scenario_json("pit", cp, {512, 256}, std::move(mask), pass, heads, kv_heads, 64);
  j["parallel"]["granularity"] = g;
  return j;
}

const Op* op_labelled(const Schedule& s, int rank, const std::string& prefix) {
  for (const Op& op : s.ranks[size_t(rank)].ops)
    if (op.label.rfind(prefix, 0) == 0)
      return &op;
  return nullptr;
}
} // namespace

TEST_CASE("PIT: the gather packs exactly the micro-tiles the model counts, every query tile once, every row covered") {
  const Json uniform{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}};
  const Json causal{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 2}, {"causal", true}};
  const Json per_head{{"kind", "block_sparse"}, {"block", 32}, {"head_densities", {0.2, 0.5, 0.1, 0.4}}, {"seed", 3}};
  for (const Json& mask : {uniform, causal, per_head})
    for (int cp : {1, 2})
      for (int64_t g : {16, 32}) {
        INFO(mask.dump() << " cp " << cp << " g " << g);
        Planned p = planned(pit_json(cp, "fwd_bwd", mask, g));
        const MaskGeometry m(p.sc.workload);
        for (const auto& rp : p.plan.ranks) {
          REQUIRE(rp.gathers.size() == 2); // forward (builds the index) and backward (reuses it)
          REQUIRE(rp.scatters.size() == 1);
          const Op* fwd = op_labelled(p.s, rp.rank, "fwd gather");
          const Op* bwd = op_labelled(p.s, rp.rank, "bwd gather");
          REQUIRE(fwd);
          REQUIRE(bwd);
          const GatherLayout& gf = rp.gathers.at(fwd->id);
          const GatherLayout& gb = rp.gathers.at(bwd->id);
          CHECK(gf.builds_index);
          CHECK_FALSE(gb.builds_index);
          CHECK(gf.index == gb.index);
          CHECK(gf.packed_rows == gb.packed_rows);
          CHECK(gf.slot_heads.size() == (m.per_head() ? 4u : 1u));
          // every packed micro-tile holds a visible cell of its query tile, or lies in the causal band
          int64_t rows = 0, entries = 0;
          for (size_t slot = 0; slot < gf.tiles.size(); ++slot) {
            const int head = gf.slot_heads[slot] < 0 ? 0 : gf.slot_heads[slot];
            std::set<int64_t> q_rows;
            int64_t tile_rows = 0;
            for (const auto& t : gf.tiles[slot]) {
              CHECK(q_rows.insert(t.q_row).second);
              tile_rows += t.q_n;
              CHECK(t.packed_row == rows);
              CHECK(t.index_entry == entries);
              for (const TokenRange& mt : t.micro) {
                const bool band = mask.value("causal", false) && mt.end > t.q_pos && mt.begin < t.q_pos + t.q_n;
                CHECK((band || m.cells(t.seq, head, {t.q_pos, t.q_pos + t.q_n}, mt) > 0));
                CHECK(mt.begin % g == 0);
                rows += mt.size();
              }
              entries += int64_t(t.micro.size());
            }
            CHECK(tile_rows == rp.buffer("q").rows); // every query row is in exactly one tile
          }
          CHECK(rows == gf.packed_rows);
          CHECK(entries == gf.entries);
          // the attention launches read the packed tiles, one per slot
          for (const Op& op : p.s.ranks[size_t(rp.rank)].ops)
            if (op.kind == OpKind::ATTENTION) {
              const auto& ls = rp.launches.at(op.id);
              CHECK(ls.size() == gf.slot_heads.size());
              for (const auto& l : ls)
                CHECK(l.gather >= 0);
            }
          // the scatter sends every gathered gradient row home: to the row holding its key
          const ScatterPlan& sp = rp.scatters.begin()->second;
          CHECK(sp.gather == bwd->id);
          const BufferPlacement& home = rp.buffers[size_t(sp.dst)];
          for (size_t slot = 0; slot < gf.tiles.size(); ++slot)
            for (size_t ti = 0; ti < gf.tiles[slot].size(); ++ti)
              for (size_t k = 0; k < gf.tiles[slot][ti].micro.size(); ++k)
                CHECK(sp.home_row[slot][ti][k] == row_of(home.tokens, gf.tiles[slot][ti].seq, gf.tiles[slot][ti].micro[k].begin));
        }
      }
}

TEST_CASE("PIT: a packed buffer whose IR size disagrees with the gather is refused, naming both sizes") {
  Json j = pit_json(1, "fwd", Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}}, 16);
  Scenario sc = test::make_scenario(j);
  Schedule s = generate_schedule(sc);
  for (Buffer& b : s.ranks[0].buffers)
    if (b.name == "kv_packed")
      b.bytes += 256;
  CHECK_THROWS_WITH(make_exec_plan(s, sc.workload), Catch::Contains("rank 0") && Catch::Contains("kv_packed") &&
                                                         Catch::Contains("gathered K, V rows take"));
}

TEST_CASE("PIT along query rows is refused by name: the backend packs key columns only") {
  Json j = pit_json(1, "fwd", Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}}, 16);
  j["parallel"]["axis"] = "rows";
  Scenario sc = test::make_scenario(j);
  CHECK_THROWS_WITH(make_exec_plan(generate_schedule(sc), sc.workload),
                    Catch::Contains("rank 0") && Catch::Contains("\"rows\"") && Catch::Contains("key columns only"));
}
