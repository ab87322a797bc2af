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
  auto tokens = [](const std::vector<TokenSlice>& v) {
    int64_t n = 0;
    for (const auto& t : v)
      n += t.range.size();
    return n;
  };
  // A worker's material: its own group first, then the rows and keys of the foreign groups it needs, in one Q and one
  // K/V buffer (a launch reads one of each); the own group is copied in, the foreign ones are received into place.
  struct Material {
    std::vector<TokenSlice> q, kv;
  };
  std::vector<Material> mat(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) {
    mat[size_t(r)].q = mat[size_t(r)].kv = group_slices(r);
    for (const auto& [x, sd] : need[size_t(r)])
      if (x != r) {
        mat[size_t(r)].q.insert(mat[size_t(r)].q.end(), sd.q_slices.begin(), sd.q_slices.end());
        mat[size_t(r)].kv.insert(mat[size_t(r)].kv.end(), sd.kv_slices.begin(), sd.kv_slices.end());
      }
  }
  auto buffer = [](std::string name, std::string tensor, int64_t bytes, int heads, std::vector<TokenSlice> toks) {
    Buffer x;
    x.name = std::move(name);
    x.tensor = std::move(tensor);
    x.bytes = bytes;
    x.head_end = heads;
    x.tokens = std::move(toks);
    return x;
  };
  std::vector<int> attn_of(static_cast<size_t>(W), -1);
  for (int r = 0; r < W; ++r) {
    const std::vector<TokenSlice> mine = group_slices(r);
    const int64_t c = tokens(mine), mq = tokens(mat[size_t(r)].q), mkv = tokens(mat[size_t(r)].kv);
    b.add_buffer(r, buffer("q", "q", c * q_bytes_per_token, H, mine));
    b.add_buffer(r, buffer("kv", "kv", c * kv_bytes_per_token, G, mine));
    b.add_buffer(r, buffer("o", "o", c * q_bytes_per_token, H, mine));
    b.add_buffer(r, buffer("lse", "lse", c * 4 * H, H, mine));
    b.add_buffer(r, buffer("q_mat", "q", mq * q_bytes_per_token, H, mat[size_t(r)].q));
    b.add_buffer(r, buffer("kv_mat", "kv", mkv * kv_bytes_per_token, G, mat[size_t(r)].kv));
    b.add_buffer(r, buffer("o_mat", "o", mq * q_bytes_per_token, H, mat[size_t(r)].q));
    b.add_buffer(r, buffer("lse_mat", "lse", mq * 4 * H, H, mat[size_t(r)].q));

    // ---- fork: send my group to the workers that need it, receive the groups I need (one NCCL group)
    const int fork_group = b.next_group(r);
    std::vector<int> fork_recvs;
    for (int j = 0; j < W; ++j) {
      if (j == r)
        continue;
      auto it = need[size_t(j)].find(r);
      if (it != need[size_t(j)].end()) {
        if (it->second.q_tokens > 0)
          b.set_regions(r, b.send(r, comm, {}, j, it->second.q_tokens * q_bytes_per_token, kTagQ, fork_group,
                                  "fork q to " + std::to_string(j), "q"),
                        {{"q", it->second.q_slices, {}}});
        if (it->second.kv_tokens > 0)
          b.set_regions(r, b.send(r, comm, {}, j, it->second.kv_tokens * kv_bytes_per_token, kTagKV, fork_group,
                                  "fork kv to " + std::to_string(j), "kv"),
                        {{"kv", it->second.kv_slices, {}}});
      }
      auto mine_it = need[size_t(r)].find(j);
      if (mine_it == need[size_t(r)].end())
        continue;
      const Side& sd = mine_it->second;
      if (sd.q_tokens > 0) {
        int id = b.recv(r, comm, {}, j, sd.q_tokens * q_bytes_per_token, kTagQ, fork_group, "fork q from " + std::to_string(j), "q_mat");
        b.set_regions(r, id, {{"q_mat", sd.q_slices, {}}});
        fork_recvs.push_back(id);
      }
      if (sd.kv_tokens > 0) {
        int id = b.recv(r, comm, {}, j, sd.kv_tokens * kv_bytes_per_token, kTagKV, fork_group, "fork kv from " + std::to_string(j), "kv_mat");
        b.set_regions(r, id, {{"kv_mat", sd.kv_slices, {}}});
        fork_recvs.push_back(id);
      }
    }
    const int first_fork = fork_recvs.empty() ? b.last_op(r) + 1 : std::min(fork_recvs.front(), b.last_op(r));
    // the own group into the material (DCP's blockwise copy, the same idea)
    const int own = b.compute(r, comp, {}, ComputeKind::COPY, 0, 2 * c * (q_bytes_per_token + kv_bytes_per_token),
                              "copy own group", {"q", "kv"}, {"q_mat", "kv_mat"});

    // ---- compute: every owned cell in one varlen launch, partials of every material row
    int64_t score_cells = 0;
    for (const auto& sg : segs[size_t(r)])
      score_cells += sg.q.size() * sg.k.size();
    if (scores == "materialized") // fp32 scores of the owned cells, alive during the kernel
      b.add_buffer(r, buffer("scores", "staging", score_cells * H * 4, H, {}));
    std::vector<int> deps = fork_recvs;
    deps.push_back(own);
    const int attn = attn_of[size_t(r)] = b.attention(r, comp, deps, Direction::FORWARD, 0, H, segs[size_t(r)],
                                                       "compute owned cells", {"q_mat", "kv_mat"}, {"o_mat", "lse_mat"});
    if (scores == "materialized") {
      b.set_alloc(r, "scores", attn);
      b.set_free(r, "scores", attn);
    }
    for (const char* n : {"q_mat", "kv_mat"}) {
      b.set_alloc(r, n, std::min(first_fork, own));
      b.set_free(r, n, attn);
    }
    for (const char* n : {"o_mat", "lse_mat"})
      b.set_alloc(r, n, attn);
  }

  // ---- join: partials of foreign rows (O and LSE, one message) go to the group's owner, which merges them by LSE
  for (int r = 0; r < W; ++r) {
    const int join_group = b.next_group(r);
    const int attn = attn_of[size_t(r)];
    int last_send = attn;
    for (const auto& [x, sd] : need[size_t(r)])
      if (x != r && sd.q_tokens > 0) {
        const int id = b.send(r, comm, {attn}, x, sd.q_tokens * (q_bytes_per_token + 4LL * H), kTagOut, join_group,
                              "join partial to " + std::to_string(x), "o_mat");
        b.set_regions(r, id, {{"o_mat", sd.q_slices, {}}, {"lse_mat", sd.q_slices, {}}});
        last_send = std::max(last_send, id);
      }
    std::vector<int> recvs;
    std::vector<std::string> merge_reads = {"o_mat", "lse_mat"};
    for (int j = 0; j < W; ++j) {
      if (j == r)
        continue;
      auto it = need[size_t(j)].find(r);
      if (it == need[size_t(j)].end() || it->second.q_tokens == 0)
        continue;
      const std::string n = "o_from" + std::to_string(j), l = "lse_from" + std::to_string(j);
      const int64_t rows = it->second.q_tokens;
      b.add_buffer(r, buffer(n, "o", rows * q_bytes_per_token, H, it->second.q_slices));
      b.add_buffer(r, buffer(l, "lse", rows * 4 * H, H, it->second.q_slices));
      int id = b.recv(r, comm, {}, j, rows * (q_bytes_per_token + 4LL * H), kTagOut, join_group,
                      "join partial from " + std::to_string(j), n);
      b.set_regions(r, id, {{n, {}, {}}, {l, {}, {}}});
      b.set_alloc(r, n, id);
      b.set_alloc(r, l, id);
      recvs.push_back(id);
      merge_reads.insert(merge_reads.end(), {n, l});
    }
    int64_t rows = 0;
    for (const auto& t : group_slices(r))
      rows += t.range.size();
    std::vector<int> deps = recvs;
    deps.push_back(attn);
    // the tiler's merge; with no foreign partial it only hands the own rows on
    int m = b.merge(r, comp, deps, Direction::FORWARD, 0, H, rows, int(recvs.size()) + 1, 0, "tiler lse merge",
                    merge_reads, {"o", "lse"});
    for (const auto& n : merge_reads)
      b.set_free(r, n, std::max(m, last_send));
  }
  return b.finish();
}

} // namespace cpsim
