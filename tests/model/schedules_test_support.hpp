// Checks shared by the tests of the stripe, TE, USP and LoongTrain schedules: exactly-once cell
// coverage (strided segments included, per-head masks by head), bytes sent, FLOPs and op counts per rank.
#pragma once

#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "cpsim/model/timeline.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

namespace cpsim::test {

/** Counts how often each visible (head, query, key) cell is computed in `dir`; all must be 1. */
inline int64_t coverage_errors(const Schedule& s, const Scenario& sc, Direction dir) {
  MaskGeometry m(sc.workload);
  const Workload& w = sc.workload;
  std::vector<std::vector<uint8_t>> count;
  for (int64_t n : w.seq_lens)
    count.emplace_back(size_t(w.heads * n * n), 0);
  for (const auto& p : s.ranks)
    for (const auto& op : p.ops) {
      if (op.kind != OpKind::ATTENTION || op.dir != dir)
        continue;
      for (const auto& seg : op.segments) {
        int64_t n = w.seq_lens[size_t(seg.seq)];
        for (int h : op.head_list())
          for (int64_t a = 0; a < seg.q.size(); ++a)
            for (int64_t b = 0; b < seg.k.size(); ++b) {
              int64_t i = seg.q.at(a), j = seg.k.at(b);
              if (m.visible(seg.seq, h, i, j))
                count[size_t(seg.seq)][size_t((h * n + i) * n + j)]++;
            }
      }
    }
  int64_t wrong = 0;
  for (size_t b = 0; b < w.seq_lens.size(); ++b) {
    int64_t n = w.seq_lens[b];
    for (int h = 0; h < w.heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          wrong += count[b][size_t((h * n + i) * n + j)] != (m.visible(int(b), h, i, j) ? 1 : 0);
  }
  return wrong;
}

/**
 * Buffers some op reads before any op of the rank wrote them ("rank r: op 'label' reads 'buffer'"), inputs (q, k, v,
 * kv, do), empty buffers and in-place accumulators (read and written by the op that first touches them) aside. USP with one ring rank sent a dQ buffer no op filled, and a zero gradient passed
 * every count above: the real backend's --check found it on GPUs (2026-11-28).
 */
inline std::vector<std::string> unwritten_reads(const Schedule& s) {
  std::vector<std::string> out;
  for (const auto& p : s.ranks) {
    std::set<std::string> written;
    for (const auto& b : p.buffers)
      if (b.bytes == 0 || b.tensor == "q" || b.tensor == "k" || b.tensor == "v" || b.tensor == "kv" || b.tensor == "do")
        written.insert(b.name);
    for (const auto& op : p.ops) {
      for (const auto& n : op.reads)
        if (!written.count(n) && std::find(op.writes.begin(), op.writes.end(), n) == op.writes.end()) // in place: an accumulator's first use
          out.push_back("rank " + std::to_string(p.rank) + ": op '" + op.label + "' reads '" + n + "'");
      written.insert(op.writes.begin(), op.writes.end());
    }
  }
  return out;
}

inline void check_exactly_once(const Schedule& s, const Scenario& sc) {
  CHECK(coverage_errors(s, sc, Direction::FORWARD) == 0);
  if (sc.pass == PassKind::FWD_BWD)
    CHECK(coverage_errors(s, sc, Direction::BACKWARD) == 0);
  // DCP and PIT name packing buffers (out_to*, grad_to*, o_partial) whose packing the send or scatter prices; no op
  // writes them, and the backend refuses both schemes
  if (s.scheme != "dcp" && s.scheme != "pit")
    CHECK(unwritten_reads(s) == std::vector<std::string>{});
}

/** Bytes rank `rank` sends in ops whose label starts with `prefix`. */
inline int64_t sent_by(const Schedule& s, int rank, const std::string& prefix = "") {
  int64_t b = 0;
  for (const auto& op : s.ranks[size_t(rank)].ops)
    if (op.label.rfind(prefix, 0) == 0)
      b += op_bytes_sent(op);
  return b;
}

inline int count_ops(const Schedule& s, int rank, OpKind k, const std::string& prefix = "") {
  int n = 0;
  for (const auto& op : s.ranks[size_t(rank)].ops)
    n += op.kind == k && op.label.rfind(prefix, 0) == 0;
  return n;
}

inline double flops_of(const Schedule& s, const Workload& w, int rank, Direction d) {
  double f = 0;
  for (const auto& op : s.ranks[size_t(rank)].ops)
    if (op.kind == OpKind::ATTENTION && op.dir == d)
      f += attention_flops(op, w);
  return f;
}

inline Scenario scenario_with(const std::string& scheme, int cp, std::vector<int64_t> lens, const Json& mask,
                              const std::string& pass, const Json& options, int heads = 4, int kv_heads = 2,
                              int head_dim = 64, const std::string& hw = "h100-sxm-8") {
  Json j = scenario_json(scheme, cp, std::move(lens), mask, pass, heads, kv_heads, head_dim, hw);
  for (auto it = options.begin(); it != options.end(); ++it)
    j["parallel"][it.key()] = it.value();
  return make_scenario(j);
}

} // namespace cpsim::test
