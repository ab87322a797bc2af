// Exec plans of the sparse and gather-style schedules (PIT, DSV, TE p2p, CQS, DCP): the plan builds, every op maps
// to buffer rows and heads, the sizes the IR declares equal what the backend moves, and every query row is covered.
#include "../../hardware/src/backend/gather_tables.hpp"
#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/hardware_catalog.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/micro_tiles.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <set>
#include <sstream>

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

/** What a message with regions carries, element row by element row: (plane, sequence, position, head). */
std::vector<std::array<int64_t, 4>> carried(const Schedule& s, int rank, const Op& op) {
  std::vector<std::array<int64_t, 4>> out;
  for (const BufferRegion& g : op.regions) {
    const Buffer* b = nullptr;
    for (const Buffer& x : s.ranks[size_t(rank)].buffers)
      if (x.name == g.buffer)
        b = &x;
    REQUIRE(b);
    const int pe = g.plane_end < 0 ? tensor_planes(b->tensor) : g.plane_end;
    for (int plane = g.plane_begin; plane < pe; ++plane)
      for (const TokenSlice& t : g.tokens.empty() ? b->tokens : g.tokens)
        for (int64_t i = 0; i < t.range.size(); ++i)
          for (int h : g.heads.empty() ? b->head_list() : g.heads)
            out.push_back({plane, t.seq, t.range.at(i), h});
  }
  return out;
}

/** Every send with regions carries, row for row, what its receive's regions expect; and the exec plan maps both. */
void check_messages(const Schedule& s, const ExecPlan& plan) {
  int checked = 0;
  for (const RankProgram& p : s.ranks)
    for (const Op& op : p.ops) {
      if (op.kind != OpKind::SEND || op.regions.empty())
        continue;
      const Op* recv = nullptr;
      for (const Op& r : s.ranks[size_t(op.peer)].ops)
        if (r.kind == OpKind::RECV && r.peer == p.rank && r.tag == op.tag)
          recv = &r;
      REQUIRE(recv);
      REQUIRE_FALSE(recv->regions.empty());
      INFO("rank " << p.rank << " '" << op.label << "' to rank " << op.peer);
      CHECK(carried(s, p.rank, op) == carried(s, op.peer, *recv));
      CHECK(plan.ranks[size_t(p.rank)].messages.count(op.id) == 1);
      CHECK(plan.ranks[size_t(op.peer)].messages.count(recv->id) == 1);
      ++checked;
    }
  (void)checked;
}

/** Each head's visible cells of an attention op, counted over its launches' rectangles, equal the op's own count. */
void check_launch_cells(const Schedule& s, const ExecPlan& plan, const MaskGeometry& m) {
  for (const RankExecPlan& rp : plan.ranks)
    for (const Op& op : s.ranks[size_t(rp.rank)].ops) {
      if (op.kind != OpKind::ATTENTION)
        continue;
      int64_t cells = 0;
      std::set<int> heads;
      for (const AttnLaunch& l : rp.launches.at(op.id))
        for (int h = l.head_begin; h < l.head_end; ++h) {
          CHECK(heads.insert(h).second); // every head in one launch
          for (const SegmentRows& sg : l.segments)
            cells += m.cells(sg.seq, h, sg.q, sg.k);
        }
      INFO("rank " << rp.rank << " '" << op.label << "'");
      CHECK(cells == op.cells_all_heads());
      CHECK(int(heads.size()) == op.heads());
    }
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
              CHECK(q_rows.insert(t.fixed_row).second);
              tile_rows += t.fixed_n;
              CHECK(t.packed_row == rows);
              CHECK(t.index_entry == entries);
              for (const TokenRange& mt : t.micro) {
                const bool band = mask.value("causal", false) && mt.end > t.fixed_pos && mt.begin < t.fixed_pos + t.fixed_n;
                CHECK((band || m.cells(t.seq, head, {t.fixed_pos, t.fixed_pos + t.fixed_n}, mt) > 0));
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

TEST_CASE("PIT along query rows: key tiles' query micro-tiles packed once, every packed row merged and scattered home") {
  const Json uniform{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}};
  const Json causal{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 2}, {"causal", true}};
  const Json per_head{{"kind", "block_sparse"}, {"block", 32}, {"head_densities", {0.2, 0.5, 0.1, 0.4}}, {"seed", 3}};
  for (const Json& mask : {uniform, causal, per_head})
    for (int cp : {1, 2})
      for (int64_t g : {16, 48}) {
        INFO(mask.dump() << " cp " << cp << " g " << g);
        Json j = pit_json(cp, "fwd_bwd", mask, g, 4, mask.contains("head_densities") ? 4 : 2);
        j["parallel"]["axis"] = "rows";
        Planned p = planned(j);
        const MaskGeometry m(p.sc.workload);
        for (const auto& rp : p.plan.ranks) {
          const Op *fwd = op_labelled(p.s, rp.rank, "fwd gather"), *bwd = op_labelled(p.s, rp.rank, "bwd gather");
          const Op *merge = op_labelled(p.s, rp.rank, "fwd scatter-merge"), *attn = op_labelled(p.s, rp.rank, "fwd attn");
          REQUIRE((fwd && bwd && merge && attn));
          const GatherLayout &gf = rp.gathers.at(fwd->id), &gb = rp.gathers.at(bwd->id);
          CHECK((gf.rows && gb.rows && gf.builds_index && !gb.builds_index));
          CHECK(gf.index == gb.index);
          CHECK(gf.packed_rows == gb.packed_rows);
          CHECK(gf.src.size() == 1); // Q
          CHECK(gb.src.size() == 3); // Q, dO, O, and the LSE beside them
          CHECK((gb.src_lse >= 0 && gb.packed_lse >= 0));
          CHECK(rp.buffers[size_t(gb.src[1])].tensor == "do");
          CHECK(rp.buffers[size_t(gb.src[2])].tensor == "o");
          CHECK(gf.slot_heads.size() == (m.per_head() ? 4u : 1u));
          const BufferPlacement& kv = rp.buffer(rp.buffers[size_t(rp.launches.at(attn->id).front().k)].name);
          CHECK(kv.tensor == "kv");
          for (size_t slot = 0; slot < gf.tiles.size(); ++slot) {
            const int head = gf.slot_heads[slot] < 0 ? 0 : gf.slot_heads[slot];
            int64_t keys = 0;
            std::set<int64_t> key_rows;
            for (size_t ti = 0; ti < gf.tiles[slot].size(); ++ti) {
              const auto& t = gf.tiles[slot][ti];
              CHECK(key_rows.insert(t.fixed_row).second);
              CHECK(t.fixed_n <= p.s.tile_n);
              keys += t.fixed_n;
              CHECK(t.micro == gb.tiles[slot][ti].micro); // the backward packs the same rows by the same index
              for (const TokenRange& mt : t.micro) {
                CHECK(m.cells(t.seq, head, mt, {t.fixed_pos, t.fixed_pos + t.fixed_n}) > 0);
                CHECK((mt.begin % g == 0 || mt.begin == t.span.begin)); // aligned, or clipped by the rank's queries
                CHECK((mt.begin >= t.span.begin && mt.end <= t.span.end));
              }
            }
            CHECK(keys == kv.rows); // every key row in exactly one key tile
          }
          // every launch reads the packed queries and the kv buffer
          for (const AttnLaunch& l : rp.launches.at(attn->id))
            CHECK((l.gather == fwd->id && l.q == -1 && l.k == l.v && l.v_plane == 1));
          // the scatter-merge and the dQ scatter take every packed row (every head of it) exactly once, home to its token
          const ForwardMerge& fm = rp.forward_merges.at(merge->id);
          REQUIRE(fm.kind == ForwardMerge::PACKED);
          CHECK(fm.gather == fwd->id);
          const ScatterPlan& sp = rp.scatters.begin()->second;
          CHECK(sp.gather == bwd->id);
          CHECK(rp.buffers[size_t(sp.dst)].tensor == "dq");
          for (const UnitSources& u : {packed_merge_units(fm, rp, p.sc.workload), scatter_units(sp, rp, p.sc.workload)}) {
            std::vector<int> taken(size_t(gf.packed_rows), 0);
            for (int64_t r : u.rows)
              ++taken[size_t(r)];
            CHECK(std::count(taken.begin(), taken.end(), 1) == gf.packed_rows);
          }
          const UnitSources u = packed_merge_units(fm, rp, p.sc.workload);
          const BufferPlacement& o = rp.buffers[size_t(fm.out)];
          for (size_t slot = 0; slot < gf.tiles.size(); ++slot)
            for (const auto& t : gf.tiles[slot]) {
              int64_t prow = t.packed_row;
              for (const TokenRange& mt : t.micro)
                for (int64_t x = mt.begin; x < mt.end; ++x, ++prow) {
                  const int64_t row = row_of(o.tokens, t.seq, x);
                  const int64_t unit = m.per_head() ? row * o.heads + o.head_pos(gf.slot_heads[slot]) : row;
                  CHECK(std::count(u.rows.begin() + u.begin[size_t(unit)], u.rows.begin() + u.begin[size_t(unit) + 1], prow) == 1);
                }
            }
        }
      }
}

TEST_CASE("PIT along query rows: per-head masks with GQA are refused for the backward, naming the overwrite") {
  const Json per_head{{"kind", "block_sparse"}, {"block", 32}, {"head_densities", {0.2, 0.5, 0.1, 0.4}}, {"seed", 3}};
  Json j = pit_json(1, "fwd_bwd", per_head, 16, 4, 2);
  j["parallel"]["axis"] = "rows";
  Scenario sc = test::make_scenario(j);
  CHECK_THROWS_WITH(make_exec_plan(generate_schedule(sc), sc.workload),
                    Catch::Contains("rank 0") && Catch::Contains("overwrite") && Catch::Contains("kv_heads = heads"));
  j["pass"] = "fwd"; // no dK, dV: nothing to overwrite
  Scenario fwd = test::make_scenario(j);
  CHECK_NOTHROW(make_exec_plan(generate_schedule(fwd), fwd.workload));
}

TEST_CASE("PIT along query rows: packed Q, dO, O whose IR size disagrees with the gather are refused, naming both sizes") {
  Json j = pit_json(1, "fwd_bwd", Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 1}}, 16);
  j["parallel"]["axis"] = "rows";
  Scenario sc = test::make_scenario(j);
  Schedule s = generate_schedule(sc);
  for (Buffer& b : s.ranks[0].buffers)
    if (b.name == "q_packed_bwd")
      b.bytes -= 256;
  CHECK_THROWS_WITH(make_exec_plan(s, sc.workload),
                    Catch::Contains("rank 0") && Catch::Contains("q_packed_bwd") && Catch::Contains("gathered Q, dO, O rows take"));
}

TEST_CASE("DSV: every degree pair, naive and aware, plans: launches cover each head's cells, messages match row for row") {
  const Json mask{{"kind", "block_sparse"}, {"block", 64}, {"head_densities", {0.6, 0.1, 0.3, 0.2}}, {"seed", 5}};
  for (const Json& v : {Json{{"hcp", 1}, {"scp", 1}}, Json{{"hcp", 2}}, Json{{"scp", 2}}, Json{{"hcp", 2}, {"scp", 2}},
                        Json{{"scp", 4}}, Json{{"hcp", 2}, {"scp", 2}, {"sparsity_aware", false}},
                        Json{{"scp", 2}, {"sparsity_aware", false}}})
    for (int kv_heads : {4, 2}) {
      if (v.value("hcp", 1) > kv_heads)
        continue;
      const int cp = v.value("hcp", 1) * v.value("scp", 1);
      Json j = test::scenario_json("dsv", cp, {1024, 512}, mask, "fwd_bwd", 4, kv_heads, 64);
      for (auto& [k, x] : v.items())
        j["parallel"][k] = x;
      j["parallel"]["cp"] = cp;
      INFO(v.dump() << " kv_heads " << kv_heads);
      Planned p = planned(j);
      const MaskGeometry m(p.sc.workload);
      check_launch_cells(p.s, p.plan, m);
      check_messages(p.s, p.plan);
      for (const auto& rp : p.plan.ranks) {
        CHECK(rp.predictors.size() == 3); // projections, estimate, top-k
        for (const auto& [id, pp] : rp.predictors)
          CHECK(pp.rank_lr == 16);
        const bool sparse_scp = v.value("sparsity_aware", true) && v.value("scp", 1) > 1;
        // the own chunk into the per-group K, V buffers; the own part of each of sparsity-aware HCP's 8 pairwise
        // exchanges (q, k, v, o, do, dq, dk, dv), which the exchange's peers do not carry
        const bool aware_hcp = v.value("sparsity_aware", true) && v.value("hcp", 1) > 1;
        CHECK(rp.copies.size() == (sparse_scp ? 1u : 0u) + (aware_hcp ? 8u : 0u));
        for (const auto& [key, b] : rp.results)
          CHECK(rp.buffers[size_t(b)].contiguous_heads());
        CHECK(rp.results.count("o"));
        CHECK(rp.results.count("dq"));
        CHECK((rp.results.count("dk") && rp.results.count("dv")));
      }
    }
}

TEST_CASE("TE p2p: [KV; dKV] halves travel as regions of one message, the fp64 correction and half-size partials map by token") {
  for (const char* mask : {"causal", "full"})
    for (int cp : {1, 2, 4}) {
      INFO(mask << " cp " << cp);
      Planned p = planned(test::scenario_json("te_p2p", cp, {512}, mask, "fwd_bwd", 4, 2, 64));
      check_messages(p.s, p.plan);
      check_launch_cells(p.s, p.plan, MaskGeometry(p.sc.workload));
      for (const auto& rp : p.plan.ranks) {
        const auto& ops = p.s.ranks[size_t(rp.rank)].ops;
        CHECK(rp.buffer("lse_acc").elem_bytes == 8); // TE's fp64 running LSE
        int folds = 0, corrections = 0, firsts = 0, lse_outs = 0, half = 0;
        for (const Op& op : ops) {
          if (op.kind == OpKind::MERGE && op.dir == Direction::FORWARD) {
            const ForwardMerge& m = rp.forward_merges.at(op.id);
            int64_t rows = 0;
            for (const RowBlock& b : m.blocks)
              rows += b.rows;
            CHECK(rows == rp.buffers[size_t(m.part_lse)].rows); // every row of the step's partial lands by token
            folds += m.kind == ForwardMerge::LSE_FOLD;
            corrections += m.kind == ForwardMerge::OUT_CORRECTION;
            firsts += m.first;
            lse_outs += m.lse_out >= 0;
          }
          if (op.kind == OpKind::ATTENTION && op.dir == Direction::FORWARD) {
            const int part = rp.buffer_index.at(op.writes[0]);
            if (rp.buffers[size_t(part)].rows < rp.buffer("q").rows) { // an upper-triangle step: second half only
              ++half;
              for (const auto& l : rp.launches.at(op.id))
                CHECK(l.row_offset.at(part) < 0); // its rows start at the q rows of the second half
            }
          }
        }
        CHECK(folds == cp);
        CHECK(corrections == cp);
        CHECK(firsts == 2); // the first fold starts lse_acc, the first correction starts o
        CHECK(lse_outs == 1);
        CHECK(half == (std::string(mask) == "causal" ? cp - 1 - rp.rank : 0));
        // dq and the first step's dKV half start from zero; received dKV halves and the final dkv are not zeroed
        std::set<std::string> zeroed;
        for (const auto& [id, bufs] : rp.zero_before)
          for (int b : bufs)
            zeroed.insert(rp.buffers[size_t(b)].name);
        CHECK(zeroed.count("dq"));
        CHECK(zeroed.count("bdkv_1") == (cp > 1 ? 1u : 0u));
        for (int i = 2; i < cp; ++i)
          CHECK_FALSE(zeroed.count("bdkv_" + std::to_string(i)));
        CHECK(zeroed.count("dkv") == (cp == 1 ? 1u : 0u));
        // a middle step's message packs both halves through staging; the first and last move one half in place
        for (const auto& [id, m] : rp.messages)
          CHECK(m.direct == (ops[size_t(id)].regions.size() == 1));
        CHECK(rp.results.count("o"));
        CHECK(rp.results.count("lse"));
        CHECK(rp.buffers[size_t(rp.results.at("dkv"))].name == "dkv");
      }
    }
}

TEST_CASE("CQS: material copied and received into one Q and one K/V buffer, partials back as O + LSE regions, k-way merge") {
  for (const Json& mask : {Json{{"kind", "full"}}, Json{{"kind", "causal"}},
                           Json{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.4}, {"seed", 7}}})
    for (int W : {3, 7}) {
      INFO(mask.dump() << " W " << W);
      Json j = test::scenario_json("cqs", W, {int64_t(W) * 64, int64_t(W) * 32 + 5}, mask, "fwd", 4, 2, 64, "dgx-h100");
      Planned p = planned(j);
      check_messages(p.s, p.plan);
      check_launch_cells(p.s, p.plan, MaskGeometry(p.sc.workload));
      for (const auto& rp : p.plan.ranks) {
        const auto& ops = p.s.ranks[size_t(rp.rank)].ops;
        int merges = 0;
        for (const Op& op : ops) {
          if (op.kind == OpKind::ATTENTION)
            CHECK(rp.launches.at(op.id).size() == 1); // one launch over the whole material
          if (op.kind == OpKind::COMPUTE) {
            CHECK(op.compute == ComputeKind::COPY);
            int64_t rows = 0;
            for (const MergeAdd& c : rp.copies.at(op.id))
              rows += c.block.rows;
            CHECK(rows == 2 * rp.buffer("q").rows); // the own group's Q and K, V rows
          }
          if (op.kind == OpKind::MERGE) {
            const ForwardMerge& m = rp.forward_merges.at(op.id);
            CHECK(m.kind == ForwardMerge::NWAY);
            int64_t rows = 0;
            for (const auto& run : m.runs) {
              CHECK(int(run.inputs.size()) == op.inputs);
              rows += run.rows;
            }
            CHECK(rows == rp.buffer("o").rows); // every output row, once
            ++merges;
          }
        }
        CHECK(merges == 1);
        CHECK(rp.buffers[size_t(rp.results.at("o"))].name == "o");
        CHECK(rp.buffers[size_t(rp.results.at("lse"))].name == "lse");
      }
    }
}

TEST_CASE("the sparse --check scenarios (scenarios/sparse_checks/list.txt) exist, have their rank counts and plan within memory") {
  const std::string root = CPSIM_SOURCE_DIR;
  std::ifstream list(root + "/scenarios/sparse_checks/list.txt");
  REQUIRE(list.good());
  std::string line;
  std::set<std::string> schemes;
  int n = 0;
  while (std::getline(list, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream in(line);
    int ranks = 0;
    std::string file;
    in >> ranks >> file;
    INFO(line);
    Scenario sc = scenario_from_json(load_json_file(root + "/" + file), builtin_hardware, root);
    CHECK(sc.parallel.cp == ranks);
    CHECK(sc.workload.total_tokens() <= 32768); // the reference of --check holds the whole sequence on each GPU
    Schedule s = generate_schedule(sc);
    ExecPlan plan = make_exec_plan(s, sc.workload);
    for (const auto& rp : plan.ranks) // with every rank on one GPU (loopback), all must fit together
      CHECK(double(rp.arena_bytes + rp.staging_bytes) * ranks <= 0.5 * 80e9);
    schemes.insert(s.scheme);
    ++n;
  }
  CHECK(n >= 20);
  CHECK(schemes == std::set<std::string>{"pit", "dsv", "te_p2p", "cqs", "dcp"});
}

TEST_CASE("DCP: block pools per (stage, head block), stage and output messages row for row, n-way merges of the IR's rows") {
  for (const Json& mask : {Json{{"kind", "causal"}}, Json{{"kind", "full"}},
                           Json{{"kind", "block_sparse"}, {"block", 32}, {"density", 0.3}, {"seed", 2}, {"causal", true}},
                           Json{{"kind", "lambda"}, {"window", 100}, {"sink", 16}},
                           Json{{"kind", "shared_question"}, {"question_fraction", 0.2}, {"answers", 3}},
                           Json{{"kind", "causal_blockwise"}, {"block", 32}, {"local_blocks", 1}}})
    for (int cp : {2, 4})
      for (const Json& opts : {Json{{"block", 64}}, Json{{"block", 64}, {"head_block", 1}, {"stages", 2}}}) {
        INFO(mask.dump() << " cp " << cp << " " << opts.dump());
        Json j = test::scenario_json("dcp", cp, {512, 256, 128, 96}, mask, "fwd_bwd", 4, 2, 64, "h100-sxm-4");
        for (auto& [k, v] : opts.items())
          j["parallel"][k] = v;
        Planned p = planned(j);
        check_messages(p.s, p.plan);
        check_launch_cells(p.s, p.plan, MaskGeometry(p.sc.workload));
        for (const auto& rp : p.plan.ranks) {
          for (const Op& op : p.s.ranks[size_t(rp.rank)].ops) {
            if (op.kind == OpKind::ATTENTION)
              CHECK(rp.launches.at(op.id).size() == 1); // one pool per tensor: one launch
            if (op.kind == OpKind::MERGE && op.dir == Direction::FORWARD)
              CHECK(rp.forward_merges.at(op.id).kind == ForwardMerge::NWAY);
          }
          for (const char* r : {"o", "lse", "dq"})
            CHECK(rp.results.count(r));
          CHECK(rp.buffers[size_t(rp.results.at("dkv"))].name == "dkv");
        }
      }
}
