// PIT on the GPU backend emulated in fp64 on the CPU from the backend's own tables and plans: the forward along query
// rows (the device's index build and gather, the packed kernel plans, the scatter-merge home) and the backward along
// both axes (dQ, dK, dV on every cell the kernels compute, packed gradients summed home by the scatter, or written in
// place). The results must be attention's under the workload's mask.
#include "../../hardware/src/backend/gather_tables.hpp"
#include "../../hardware/src/backend/plan_emulator.hpp"
#include "kernel_plan_support.hpp"

#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

using namespace cpsim;
using namespace cpsim::backend;
using namespace cpsim::backend::test_support;

namespace {

const Op& labelled(const RankProgram& p, const std::string& prefix) {
  for (const Op& op : p.ops)
    if (op.label.rfind(prefix, 0) == 0)
      return op;
  FAIL("no op '" << prefix << "'");
  throw;
}

TokenSlice token_of_row(const BufferPlacement& b, int64_t row) {
  for (const TokenSlice& s : b.tokens) {
    if (row < s.range.size())
      return {s.seq, {s.range.at(row), s.range.at(row) + 1}};
    row -= s.range.size();
  }
  FAIL("row " << row << " beyond '" << b.name << "'");
  throw;
}


/** Source row (in the gather's first source) and head column of every packed row, as the device's gather writes them. */
std::vector<std::pair<int64_t, int>> packed_sources(const GatherLayout& gl, const RankExecPlan& rp, const Workload& w) {
  std::vector<std::pair<int64_t, int>> out(size_t(gl.packed_rows), {-1, -1});
  const std::vector<GatheredRun> runs = gathered_runs(gather_entries(gl, rp, w), gl.granularity);
  REQUIRE(int64_t(runs.size()) == gl.entries);
  for (const GatheredRun& run : runs)
    for (int64_t x = 0; x < run.rows; ++x) {
      auto& slot = out[size_t(run.dst_row + x)];
      REQUIRE(slot.first == -1); // every packed row written once
      slot = {run.src_row + x, run.head};
    }
  CHECK(std::find(out.begin(), out.end(), std::pair<int64_t, int>{-1, -1}) == out.end());
  return out;
}

} // namespace

TEST_CASE("PIT along query rows: gather, packed plans and scatter-merge compute exact attention (fp64 emulation)") {
  // The whole forward pipeline the backend runs, emulated on the CPU from its own tables: the device's index build
  // (k-th set flag -> micro-tile id), the gather's row copies, the kernels' listed tiles and partial-tile mask (as
  // MaskDesc::visible applies it), the per-row LSE merge home. The result must be attention under the workload's mask.
  const int D = 64;
  const Json uniform{{"kind", "block_sparse"}, {"block", 32}, {"density", 0.3}, {"seed", 3}};
  const Json causal{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 4}, {"causal", true}};
  const Json per_head{{"kind", "block_sparse"}, {"block", 64}, {"head_densities", {0.2, 0.6}}, {"seed", 5}, {"causal", true}};
  for (const Json& mask : {uniform, causal, per_head})
    for (int cp : {1, 2})
      for (int64_t g : {16, 48}) {
        INFO(mask.dump() << " cp " << cp << " g " << g);
        const int heads = 2, kv_heads = mask.contains("head_densities") ? 2 : 1, per = heads / kv_heads;
        Json j = test::scenario_json("pit", cp, {320, 192}, mask, "fwd_bwd", heads, kv_heads, D);
        j["parallel"]["granularity"] = g;
        j["parallel"]["axis"] = "rows";
        const Scenario sc = test::make_scenario(j);
        const Schedule s = generate_schedule(sc);
        const ExecPlan plan = make_exec_plan(s, sc.workload);
        const MaskGeometry m(sc.workload);
        const double scale = 1.0 / std::sqrt(double(D));
        for (const RankExecPlan& rp : plan.ranks) {
          const RankProgram& prog = s.ranks[size_t(rp.rank)];
          const Op &gather = labelled(prog, "fwd gather"), &attn = labelled(prog, "fwd attn"), &merge = labelled(prog, "fwd scatter-merge");
          const GatherLayout& gl = rp.gathers.at(gather.id);
          REQUIRE(gl.rows);
          const BufferPlacement &q = rp.buffers[size_t(gl.src[0])], &kv = rp.buffers[size_t(rp.launches.at(attn.id).front().k)];
          // each packed row's source row and head column, as the gather writes them
          const auto src = packed_sources(gl, rp, sc.workload);
          // partial (O, LSE) per packed row and head, from each slot's plan
          std::vector<std::vector<double>> part_o(size_t(gl.packed_rows * gl.row_heads), std::vector<double>(D, 0.0));
          std::vector<double> part_lse(size_t(gl.packed_rows * gl.row_heads), -INFINITY);
          for (size_t slot = 0; slot < gl.slot_heads.size(); ++slot) {
            const std::vector<int> hs = gl.slot_heads[slot] >= 0 ? std::vector<int>{gl.slot_heads[slot]} : attn.head_list();
            const PlannedKernel k = gathered_plan(gl, int(slot), m, hs.front());
            check_lists(k.plan);
            for (size_t hi = 0; hi < hs.size(); ++hi) {
              const int h = hs[hi];
              for (size_t qt = 0; qt < k.plan.q_tiles.size(); ++qt) {
                const kn::TileRange& tq = k.plan.q_tiles[qt];
                for (int64_t i = 0; i < tq.n; ++i) {
                  const int64_t pr = tq.row0 + i;
                  const TokenSlice qtok = token_of_row(q, src[size_t(pr)].first);
                  if (gl.slot_heads[slot] >= 0)
                    CHECK(src[size_t(pr)].second == q.head_pos(h));
                  std::vector<std::pair<double, int64_t>> scores;
                  for (size_t kt = 0; kt < k.plan.k_tiles.size(); ++kt)
                    for (int64_t jj = 0; jj < k.plan.k_tiles[kt].n; ++jj)
                      if (computed(k, 0, qt, i, kt, jj)) {
                        const TokenSlice ktok = token_of_row(kv, k.plan.k_tiles[kt].row0 + jj);
                        REQUIRE(ktok.seq == qtok.seq);
                        double sc_ = 0;
                        for (int d = 0; d < D; ++d)
                          sc_ += emulated_input(1, qtok.seq, qtok.range.begin, h, d, D) * emulated_input(2, ktok.seq, ktok.range.begin, h / per, d, D);
                        scores.push_back({sc_ * scale, ktok.range.begin});
                      }
                  if (scores.empty())
                    continue;
                  double mx = -INFINITY, sum = 0;
                  for (auto& [v, kp] : scores)
                    mx = std::max(mx, v);
                  for (auto& [v, kp] : scores)
                    sum += std::exp(v - mx);
                  const size_t at = size_t(pr * gl.row_heads + (gl.row_heads == 1 ? 0 : hi));
                  part_lse[at] = mx + std::log(sum);
                  for (auto& [v, kp] : scores)
                    for (int d = 0; d < D; ++d)
                      part_o[at][size_t(d)] += std::exp(v - part_lse[at]) * emulated_input(3, qtok.seq, kp, h / per, d, D);
                }
              }
            }
          }
          // merged home by the scatter-merge's units; compared with attention under the mask
          const ForwardMerge& fm = rp.forward_merges.at(merge.id);
          REQUIRE(fm.kind == ForwardMerge::PACKED);
          const BufferPlacement& o = rp.buffers[size_t(fm.out)];
          const UnitSources u = packed_merge_units(fm, rp, sc.workload);
          REQUIRE(int64_t(u.unit_elem.size()) == o.rows * (u.unit_heads == 1 ? o.heads : 1));
          int64_t checked = 0;
          for (size_t un = 0; un < u.unit_elem.size(); ++un)
            for (int hh = 0; hh < u.unit_heads; ++hh) {
              const int64_t row = u.unit_elem[un] / o.width;
              const int h = o.head_ids[size_t((u.unit_elem[un] % o.width) / D + hh)];
              const TokenSlice tok = token_of_row(o, row);
              double mx = -INFINITY, sum = 0;
              for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c)
                mx = std::max(mx, part_lse[size_t(u.rows[size_t(c)] * gl.row_heads + hh)]);
              for (int64_t c = u.begin[un]; c < u.begin[un + 1] && std::isfinite(mx); ++c)
                sum += std::exp(part_lse[size_t(u.rows[size_t(c)] * gl.row_heads + hh)] - mx);
              const double L = std::isfinite(mx) ? mx + std::log(sum) : -INFINITY;
              // the reference: every visible key of the sequence
              double rmx = -INFINITY, rsum = 0;
              std::vector<std::pair<double, int64_t>> ref;
              for (int64_t kp = 0; kp < sc.workload.seq_lens[size_t(tok.seq)]; ++kp)
                if (m.visible(tok.seq, h, tok.range.begin, kp)) {
                  double v = 0;
                  for (int d = 0; d < D; ++d)
                    v += emulated_input(1, tok.seq, tok.range.begin, h, d, D) * emulated_input(2, tok.seq, kp, h / per, d, D);
                  ref.push_back({v * scale, kp});
                  rmx = std::max(rmx, v * scale);
                }
              for (auto& [v, kp] : ref)
                rsum += std::exp(v - rmx);
              const double RL = ref.empty() ? -INFINITY : rmx + std::log(rsum);
              INFO("rank " << rp.rank << " seq " << tok.seq << " pos " << tok.range.begin << " head " << h);
              if (!std::isfinite(RL)) {
                CHECK_FALSE(std::isfinite(L));
                continue;
              }
              REQUIRE(L == Approx(RL).epsilon(1e-12));
              for (int d = 0; d < D; ++d) {
                double got = 0, want = 0;
                for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c) {
                  const size_t at = size_t(u.rows[size_t(c)] * gl.row_heads + hh);
                  got += std::exp(part_lse[at] - L) * part_o[at][size_t(d)];
                }
                for (auto& [v, kp] : ref)
                  want += std::exp(v - RL) * emulated_input(3, tok.seq, kp, h / per, d, D);
                REQUIRE(got == Approx(want).margin(1e-12));
              }
              ++checked;
            }
          CHECK(checked > 0);
        }
      }
}


TEST_CASE("PIT backward, both axes: gather, packed plans, in-place and scattered gradients give exact dQ, dK, dV (fp64)") {
  // The backward the backend runs, emulated from its tables: P = exp(S - LSE) and dS = P (dP - Delta) on every cell
  // the kernels compute (listed tiles, partial tiles masked as MaskDesc::visible applies it), dQ into its q rows or
  // packed rows summed home by the SCATTER, dK and dV into packed rows summed home (columns) or in place (rows), the
  // ranks' dK, dV summed (the reduce-scatter). The result must be attention's gradients under the workload's mask.
  const int D = 64, E = 8; // buffers of head_dim 64; the emulation's vectors use 8 of its elements (scores scaled by 1/sqrt(64))
  const Json uniform{{"kind", "block_sparse"}, {"block", 32}, {"density", 0.3}, {"seed", 6}};
  const Json causal{{"kind", "block_sparse"}, {"block", 16}, {"density", 0.3}, {"seed", 7}, {"causal", true}};
  const Json per_head{{"kind", "block_sparse"}, {"block", 64}, {"head_densities", {0.3, 0.6}}, {"seed", 8}, {"causal", true}};
  for (const char* axis : {"columns", "rows"})
    for (const Json& mask : {uniform, causal, per_head})
      for (int cp : {1, 2}) {
        const int64_t g = cp == 1 ? 16 : 48;
        INFO(axis << " " << mask.dump() << " cp " << cp << " g " << g);
        const bool ph = mask.contains("head_densities");
        const int heads = 2, kv_heads = ph && std::string(axis) == "rows" ? 2 : 1, per = heads / kv_heads;
        Json j = test::scenario_json("pit", cp, {320, 192}, mask, "fwd_bwd", heads, kv_heads, D);
        j["parallel"]["granularity"] = g;
        j["parallel"]["axis"] = axis;
        const Scenario sc = test::make_scenario(j);
        const Schedule s = generate_schedule(sc);
        const ExecPlan plan = make_exec_plan(s, sc.workload);
        const MaskGeometry m(sc.workload);
        const double scale = 1.0 / std::sqrt(double(D));
        auto Q = [](int sq, int64_t p, int h, int d) { return emulated_input(1, sq, p, h, d, D); };
        auto K = [](int sq, int64_t p, int kh, int d) { return emulated_input(2, sq, p, kh, d, D); };
        auto V = [](int sq, int64_t p, int kh, int d) { return emulated_input(3, sq, p, kh, d, D); };
        auto dO = [](int sq, int64_t p, int h, int d) { return emulated_input(4, sq, p, h, d, D); };
        std::map<std::array<int64_t, 4>, double> scores;
        auto score = [&](int sq, int64_t qp, int64_t kp, int h) {
          auto [it, fresh] = scores.try_emplace({sq, qp, kp, h}, 0.0);
          if (fresh) {
            for (int d = 0; d < E; ++d)
              it->second += Q(sq, qp, h, d) * K(sq, kp, h / per, d);
            it->second *= scale;
          }
          return it->second;
        };
        // reference forward (O, LSE, Delta) and gradients, cell by cell over the mask
        std::map<std::array<int64_t, 3>, double> lse, delta; // (seq, pos, head)
        std::map<std::array<int64_t, 3>, std::vector<double>> ref_dq, ref_dk, ref_dv; // dk, dv: (seq, pos, KV head)
        for (int sq = 0; sq < 2; ++sq) {
          const int64_t n = sc.workload.seq_lens[size_t(sq)];
          for (int h = 0; h < heads; ++h)
            for (int64_t qp = 0; qp < n; ++qp) {
              double mx = -INFINITY, sum = 0;
              for (int64_t kp = 0; kp < n; ++kp)
                if (m.visible(sq, h, qp, kp))
                  mx = std::max(mx, score(sq, qp, kp, h));
              if (!std::isfinite(mx))
                continue;
              std::vector<double> o(E, 0.0);
              for (int64_t kp = 0; kp < n; ++kp)
                if (m.visible(sq, h, qp, kp))
                  sum += std::exp(score(sq, qp, kp, h) - mx);
              const double L = mx + std::log(sum);
              double dl = 0;
              for (int64_t kp = 0; kp < n; ++kp)
                if (m.visible(sq, h, qp, kp))
                  for (int d = 0; d < E; ++d)
                    o[size_t(d)] += std::exp(score(sq, qp, kp, h) - L) * V(sq, kp, h / per, d);
              for (int d = 0; d < E; ++d)
                dl += dO(sq, qp, h, d) * o[size_t(d)];
              lse[{sq, qp, h}] = L;
              delta[{sq, qp, h}] = dl;
              auto& dq = ref_dq[{sq, qp, h}];
              dq.assign(E, 0.0);
              for (int64_t kp = 0; kp < n; ++kp) {
                if (!m.visible(sq, h, qp, kp))
                  continue;
                const double pr = std::exp(score(sq, qp, kp, h) - L);
                double dp = 0;
                for (int d = 0; d < E; ++d)
                  dp += dO(sq, qp, h, d) * V(sq, kp, h / per, d);
                const double ds = pr * (dp - dl);
                auto& dk = ref_dk[{sq, kp, h / per}];
                auto& dv = ref_dv[{sq, kp, h / per}];
                dk.resize(E, 0.0);
                dv.resize(E, 0.0);
                for (int d = 0; d < E; ++d) {
                  dq[size_t(d)] += scale * ds * K(sq, kp, h / per, d);
                  dk[size_t(d)] += scale * ds * Q(sq, qp, h, d);
                  dv[size_t(d)] += pr * dO(sq, qp, h, d);
                }
              }
            }
        }
        std::map<std::array<int64_t, 3>, std::vector<double>> got_dk, got_dv; // summed over ranks
        int64_t dq_checked = 0;
        for (const RankExecPlan& rp : plan.ranks) {
          const RankProgram& prog = s.ranks[size_t(rp.rank)];
          const Op& gather = labelled(prog, "bwd gather");
          const Op& attn = labelled(prog, "bwd attn");
          const GatherLayout& gl = rp.gathers.at(gather.id);
          const ScatterPlan& sp = rp.scatters.begin()->second;
          REQUIRE(sp.gather == gather.id);
          const auto src = packed_sources(gl, rp, sc.workload);
          const BufferPlacement& q = rp.buffer("q");
          const BufferPlacement& kvb = rp.buffer(cp > 1 ? "kv_gathered_bwd" : "kv");
          const BufferPlacement& gsrc = rp.buffers[size_t(gl.src[0])];
          const int64_t RH = gl.row_heads;
          // gradient rows the kernels write: dQ (q rows, or packed rows), dK and dV (packed rows, or kv rows)
          std::map<std::pair<int64_t, int>, std::vector<double>> dq_rows, dk_rows, dv_rows; // (row, head or KV head)
          for (size_t slot = 0; slot < gl.slot_heads.size(); ++slot) {
            const std::vector<int> hs = gl.slot_heads[slot] >= 0 ? std::vector<int>{gl.slot_heads[slot]} : attn.head_list();
            const PlannedKernel k = gathered_plan(gl, int(slot), m, hs.front());
            for (int h : hs)
              for (size_t qt = 0; qt < k.plan.q_tiles.size(); ++qt)
                for (int64_t i = 0; i < k.plan.q_tiles[qt].n; ++i) {
                  const int64_t qrow = k.plan.q_tiles[qt].row0 + i;
                  const TokenSlice qtok = token_of_row(gl.rows ? gsrc : q, gl.rows ? src[size_t(qrow)].first : qrow);
                  const int sq = qtok.seq;
                  const int64_t qp = qtok.range.begin;
                  for (size_t kt = 0; kt < k.plan.k_tiles.size(); ++kt)
                    for (int64_t jj = 0; jj < k.plan.k_tiles[kt].n; ++jj) {
                      if (!computed(k, 0, qt, i, kt, jj))
                        continue;
                      const int64_t krow = k.plan.k_tiles[kt].row0 + jj;
                      const TokenSlice ktok = token_of_row(gl.rows ? kvb : gsrc, gl.rows ? krow : src[size_t(krow)].first);
                      REQUIRE(ktok.seq == sq);
                      const int64_t kp = ktok.range.begin;
                      REQUIRE(m.visible(sq, h, qp, kp));
                      const double pr = std::exp(score(sq, qp, kp, h) - lse.at({sq, qp, h}));
                      double dp = 0;
                      for (int d = 0; d < E; ++d)
                        dp += dO(sq, qp, h, d) * V(sq, kp, h / per, d);
                      const double ds = pr * (dp - delta.at({sq, qp, h}));
                      // a packed row holds the slot's head (per-head) or every head of its source side by side
                      const int qh = gl.rows && RH == 1 ? 0 : h, kh = !gl.rows && RH == 1 ? 0 : h / per;
                      auto& dq = dq_rows[{qrow, qh}];
                      auto& dk = dk_rows[{krow, kh}];
                      auto& dv = dv_rows[{krow, kh}];
                      dq.resize(E, 0.0);
                      dk.resize(E, 0.0);
                      dv.resize(E, 0.0);
                      for (int d = 0; d < E; ++d) {
                        dq[size_t(d)] += scale * ds * K(sq, kp, h / per, d);
                        dk[size_t(d)] += scale * ds * Q(sq, qp, h, d);
                        dv[size_t(d)] += pr * dO(sq, qp, h, d);
                      }
                    }
                }
          }
          // the SCATTER's units: each home unit the sum of its packed rows
          const UnitSources u = scatter_units(sp, rp, sc.workload);
          const BufferPlacement& home = rp.buffers[size_t(sp.dst)];
          auto home_of = [&](size_t un, int hh) { // (row, head index in the home row) of unit un's hh-th head
            const int64_t e = u.unit_elem[un] + int64_t(hh) * D;
            return std::pair<int64_t, int>{e / home.width, int((e % home.width) / D)};
          };
          std::map<std::pair<int64_t, int>, std::vector<double>> dq_home = gl.rows ? decltype(dq_rows){} : dq_rows;
          std::map<std::pair<int64_t, int>, std::vector<double>> dk_home = gl.rows ? dk_rows : decltype(dk_rows){};
          std::map<std::pair<int64_t, int>, std::vector<double>> dv_home = gl.rows ? dv_rows : decltype(dv_rows){};
          for (size_t un = 0; un < u.unit_elem.size(); ++un)
            for (int hh = 0; hh < u.unit_heads; ++hh) {
              const auto [row, hp] = home_of(un, hh);
              const int packed_head = RH == 1 ? 0 : hp;
              for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c) {
                const std::pair<int64_t, int> from{u.rows[size_t(c)], packed_head};
                const std::pair<int64_t, int> to{row, home.head_ids[size_t(hp)]};
                auto add = [&](const auto& rows, auto& into) {
                  if (auto it = rows.find(from); it != rows.end()) {
                    auto& x = into[to];
                    x.resize(E, 0.0);
                    for (int d = 0; d < E; ++d)
                      x[size_t(d)] += it->second[size_t(d)];
                  }
                };
                if (gl.rows) {
                  add(dq_rows, dq_home);
                } else {
                  add(dk_rows, dk_home);
                  add(dv_rows, dv_home);
                }
              }
            }
          // dQ of this rank's queries; dK, dV of the gathered keys, summed over ranks as the reduce-scatter does
          for (auto& [key, v] : dq_home) {
            const TokenSlice t = token_of_row(q, key.first);
            const auto it = ref_dq.find({t.seq, t.range.begin, key.second});
            for (int d = 0; d < E; ++d)
              REQUIRE(v[size_t(d)] == Approx(it == ref_dq.end() ? 0.0 : it->second[size_t(d)]).margin(1e-12));
            ++dq_checked;
          }
          for (auto* pair : {&dk_home, &dv_home})
            for (auto& [key, v] : *pair) {
              const TokenSlice t = token_of_row(kvb, key.first);
              auto& into = (pair == &dk_home ? got_dk : got_dv)[{t.seq, t.range.begin, key.second}];
              into.resize(E, 0.0);
              for (int d = 0; d < E; ++d)
                into[size_t(d)] += v[size_t(d)];
            }
        }
        CHECK(dq_checked == int64_t(ref_dq.size())); // every query with a visible key got its dQ, once
        for (auto* pair : {&ref_dk, &ref_dv}) {
          const auto& got = pair == &ref_dk ? got_dk : got_dv;
          CHECK(got.size() == pair->size());
          for (auto& [key, want] : *pair) {
            INFO("seq " << key[0] << " key " << key[1] << " KV head " << key[2]);
            REQUIRE(got.count(key) == 1);
            for (int d = 0; d < E; ++d)
              REQUIRE(got.at(key)[size_t(d)] == Approx(want[size_t(d)]).margin(1e-12));
          }
        }
      }
}
