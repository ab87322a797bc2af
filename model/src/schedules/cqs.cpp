// CQS-Attention (schedules.md 7): each sequence is cut into W token groups; worker i owns the group
// cells of its distilled cyclic quorum, computes them with no communication among workers, and the
// tiler merges the partials of each row by LSE. Owner-computes layout (7.5): rank g starts with
// group g of every sequence, so the scheduler's fork is a sparse exchange with the k-1 quorum peers
// and the tiler's join returns partial (O, LSE) to the group's owner for a k-way merge. Only the
// forward exists (the CQS code has no backward).
#include "cpsim/model/cqs_partition.hpp"
#include "cpsim/model/difference_sets.hpp"
#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include "cpsim/model/errors.hpp"

#include <map>

namespace cpsim {

namespace {

constexpr int kTagQ = 1, kTagKV = 2, kTagOut = 3;

/** The interest set for W: the option if given (checked), else the repo's table, else Singer. */
std::vector<int64_t> interest_set_for(const Scenario& sc, int W) {
  if (sc.parallel.options.contains("interest_set")) {
    const Json& j = sc.parallel.options.at("interest_set");
    std::vector<int64_t> d;
    if (j.is_array())
      for (const Json& v : j)
        if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < W)
          d.push_back(v.get<int64_t>());
    if (!j.is_array() || d.size() != j.size())
      throw UserError("'parallel.interest_set' = " + j.dump() + ": must be an array of integers in [0, " +
                      std::to_string(W) + ")");
    if (d.empty() || d.front() != 0)
      throw UserError("'parallel.interest_set' = " + j.dump() + ": must start with 0 (the worker's own group)");
    if (!is_perfect_difference_set(d, W))
      throw UserError("'parallel.interest_set' = " + j.dump() + ": not a perfect difference set mod " +
                      std::to_string(W) + " (every nonzero residue must occur exactly once as a difference)");
    return d;
  }
  std::vector<int64_t> d = tabulated_difference_set(W);
  if (!d.empty())
    return d;
  if (auto q = singer_order(W))
    return singer_difference_set(*q);
  throw UserError("'parallel.cp' = " + std::to_string(W) +
                  ": cqs needs a perfect difference set mod cp: cp in {3, 7, 13, 21, 31, 57, 73, 91} or q^2+q+1 "
                  "with q a prime power (e.g. 133, 183, 273, 307)");
}

struct Side {
  int64_t q_tokens = 0;  // of group x, tokens whose Q the worker needs (rows with visible cells)
  int64_t kv_tokens = 0; // tokens whose K, V it needs (keys with visible cells)
  std::vector<TokenSlice> q_slices, kv_slices;
};

void add_slice(Side& sd, bool q_side, TokenSlice t) {
  auto& v = q_side ? sd.q_slices : sd.kv_slices;
  for (const auto& u : v)
    if (u == t)
      return;
  v.push_back(t);
  (q_side ? sd.q_tokens : sd.kv_tokens) += t.range.size();
}

} // namespace

Schedule generate_cqs(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {"interest_set", "scores"});
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  if (sc.pass != PassKind::FWD)
    throw UserError("'pass' = \"" + to_string(sc.pass) +
                    "\": cqs plans the forward only (the CQS-Attention code has no backward pass)");
  if (W < 3)
    throw UserError("'parallel.cp' = " + std::to_string(W) + ": cqs needs at least 3 workers (the smallest difference "
                    "set is {0,1} mod 3)");
  std::string scores = "materialized";
  if (sc.parallel.options.contains("scores")) {
    const Json& j = sc.parallel.options.at("scores");
    if (!j.is_string() || (j != "materialized" && j != "flash"))
      throw UserError("'parallel.scores' = " + j.dump() + ": must be \"materialized\" (the CQS workers build the "
                      "score matrix of their cells) or \"flash\"");
    scores = j.get<std::string>();
  }
  for (size_t s = 0; s < w.seq_lens.size(); ++s)
    if (w.seq_lens[s] < W)
      throw UserError("'workload.seq_lens[" + std::to_string(s) + "]' = " + std::to_string(w.seq_lens[s]) +
                      ": cqs cuts every sequence into cp = " + std::to_string(W) + " groups of at least one token");
  const std::vector<int64_t> I = interest_set_for(sc, W);
  const CqsPartition part = cqs_partition(W, I);

  ScheduleBuilder b(sc, mask, "cqs", W);
  const int comp = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm = b.add_stream("comm", StreamKind::COMM);
  auto group_slices = [&](int g) {
    std::vector<TokenSlice> t;
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      auto [lo, hi] = cqs_group_range(w.seq_lens[s], W, g);
      t.push_back({int(s), {lo, hi}});
    }
    return t;
  };

  // need[i][x]: which Q rows and KV keys of group x worker i touches (visible cells only).
  std::vector<std::map<int, Side>> need(static_cast<size_t>(W));
  std::vector<std::vector<AttnSegment>> segs(static_cast<size_t>(W));
  for (int i = 0; i < W; ++i)
    for (auto [x, y] : part.cells[size_t(i)])
      for (size_t s = 0; s < w.seq_lens.size(); ++s) {
        auto [qa, qb] = cqs_group_range(w.seq_lens[s], W, x);
        auto [ka, kb] = cqs_group_range(w.seq_lens[s], W, y);
        AttnSegment seg{int(s), {qa, qb}, {ka, kb}};
        if (mask.cells(seg.seq, seg.q, seg.k) == 0)
          continue;
        segs[size_t(i)].push_back(seg);
        add_slice(need[size_t(i)][x], true, {int(s), {qa, qb}});
        add_slice(need[size_t(i)][y], false, {int(s), {ka, kb}});
      }

  const int64_t q_bytes_per_token = int64_t(H) * D * e, kv_bytes_per_token = 2LL * G * D * e;
  const int64_t part_bytes_per_token = int64_t(H) * D * e + 4LL * H; // partial O plus fp32 LSE
  std::vector<int> attn_of(static_cast<size_t>(W), -1);
  for (int r = 0; r < W; ++r) {
    const std::vector<TokenSlice> mine = group_slices(r);
    int64_t c = 0;
    for (const auto& t : mine)
      c += t.range.size();
    b.add_buffer(r, {"q", "q", c * q_bytes_per_token, 0, H, mine, -1, -1, {}, {}});
    b.add_buffer(r, {"kv", "kv", c * kv_bytes_per_token, 0, G, mine, -1, -1, {}, {}});
    b.add_buffer(r, {"o", "o", c * q_bytes_per_token, 0, H, mine, -1, -1, {}, {}});
    b.add_buffer(r, {"lse", "lse", c * 4 * H, 0, H, mine, -1, -1, {}, {}});

    // ---- fork: send my group to the workers that need it, receive the groups I need (one NCCL group)
    const int fork_group = b.next_group(r);
    std::vector<int> fork_recvs;
    std::vector<std::string> reads = {"q", "kv"};
    for (int j = 0; j < W; ++j) {
      if (j == r)
        continue;
      auto it = need[size_t(j)].find(r);
      if (it != need[size_t(j)].end()) {
        if (it->second.q_tokens > 0)
          b.send(r, comm, {}, j, it->second.q_tokens * q_bytes_per_token, kTagQ, fork_group,
                 "fork q to " + std::to_string(j), "q");
        if (it->second.kv_tokens > 0)
          b.send(r, comm, {}, j, it->second.kv_tokens * kv_bytes_per_token, kTagKV, fork_group,
                 "fork kv to " + std::to_string(j), "kv");
      }
      auto mine_it = need[size_t(r)].find(j);
      if (mine_it == need[size_t(r)].end())
        continue;
      const Side& sd = mine_it->second;
      if (sd.q_tokens > 0) {
        const std::string n = "q_g" + std::to_string(j);
        b.add_buffer(r, {n, "q", sd.q_tokens * q_bytes_per_token, 0, H, sd.q_slices, -1, -1, {}, {}});
        int id = b.recv(r, comm, {}, j, sd.q_tokens * q_bytes_per_token, kTagQ, fork_group, "fork q from " + std::to_string(j), n);
        b.set_alloc(r, n, id);
        fork_recvs.push_back(id);
        reads.push_back(n);
      }
      if (sd.kv_tokens > 0) {
        const std::string n = "kv_g" + std::to_string(j);
        b.add_buffer(r, {n, "kv", sd.kv_tokens * kv_bytes_per_token, 0, G, sd.kv_slices, -1, -1, {}, {}});
        int id = b.recv(r, comm, {}, j, sd.kv_tokens * kv_bytes_per_token, kTagKV, fork_group, "fork kv from " + std::to_string(j), n);
        b.set_alloc(r, n, id);
        fork_recvs.push_back(id);
        reads.push_back(n);
      }
    }

    // ---- compute: every owned cell in one varlen launch, partials for foreign rows kept apart
    std::vector<std::string> writes = {"o", "lse"};
    int64_t score_cells = 0;
    for (const auto& sg : segs[size_t(r)])
      score_cells += sg.q.size() * sg.k.size();
    for (const auto& [x, sd] : need[size_t(r)])
      if (x != r && sd.q_tokens > 0) {
        const std::string n = "o_part_g" + std::to_string(x);
        b.add_buffer(r, {n, "o", sd.q_tokens * part_bytes_per_token, 0, H, sd.q_slices, -1, -1, {}, {}});
        writes.push_back(n);
      }
    if (scores == "materialized") // fp32 scores of the owned cells, alive during the kernel
      b.add_buffer(r, {"scores", "staging", score_cells * H * 4, 0, H, {}, -1, -1, {}, {}});
    const int attn = attn_of[size_t(r)] = b.attention(r, comp, fork_recvs, Direction::FORWARD, 0, H, segs[size_t(r)], "compute owned cells",
                                 reads, writes);
    if (scores == "materialized") {
      b.set_alloc(r, "scores", attn);
      b.set_free(r, "scores", attn);
    }
    for (const auto& n : reads)
      if (n != "q" && n != "kv")
        b.set_free(r, n, attn);
    for (const auto& n : writes)
      if (n != "o" && n != "lse")
        b.set_alloc(r, n, attn);
  }

  // ---- join: partials of foreign rows go to the group's owner, which merges them by LSE
  for (int r = 0; r < W; ++r) {
    const int join_group = b.next_group(r);
    const int attn = attn_of[size_t(r)];
    std::vector<int> recvs;
    std::vector<std::string> merge_reads = {"o", "lse"};
    for (const auto& [x, sd] : need[size_t(r)])
      if (x != r && sd.q_tokens > 0) {
        const std::string n = "o_part_g" + std::to_string(x);
        int id = b.send(r, comm, {attn}, x, sd.q_tokens * part_bytes_per_token, kTagOut, join_group,
                        "join partial to " + std::to_string(x), n);
        b.set_free(r, n, id);
      }
    int64_t rows = 0;
    for (const auto& t : group_slices(r))
      rows += t.range.size();
    for (int j = 0; j < W; ++j) {
      if (j == r)
        continue;
      auto it = need[size_t(j)].find(r);
      if (it == need[size_t(j)].end() || it->second.q_tokens == 0)
        continue;
      const std::string n = "o_part_from" + std::to_string(j);
      const int64_t bytes = it->second.q_tokens * part_bytes_per_token;
      b.add_buffer(r, {n, "o", bytes, 0, H, it->second.q_slices, -1, -1, {}, {}});
      int id = b.recv(r, comm, {}, j, bytes, kTagOut, join_group, "join partial from " + std::to_string(j), n);
      b.set_alloc(r, n, id);
      recvs.push_back(id);
      merge_reads.push_back(n);
    }
    if (recvs.empty())
      continue;
    std::vector<int> deps = recvs;
    deps.push_back(attn);
    int m = b.merge(r, comp, deps, Direction::FORWARD, 0, H, rows, int(recvs.size()) + 1, 0, "tiler lse merge",
                    merge_reads, {"o", "lse"});
    for (size_t k = 2; k < merge_reads.size(); ++k)
      b.set_free(r, merge_reads[k], m);
  }
  return b.finish();
}

} // namespace cpsim
