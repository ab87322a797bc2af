// DSV's predictor ops as buffer rows and sizes. The projections are GEMMs over the rows x heads of q and k; the
// estimate and the top-k work per proxy query (every query_group-th query of a sequence) against every key of its
// sequence; the sizes of the threshold and index buffers and the projection's FLOPs must be what the IR says.
#include "op_plans.hpp"

#include "buffer_plan.hpp"

#include "cpsim/model/errors.hpp"

#include <map>
#include <set>

namespace cpsim::backend {

namespace {

int find(const RankExecPlan& rp, const std::vector<std::string>& names, const std::string& tensor) {
  for (const auto& n : names)
    if (rp.buffer(n).tensor == tensor)
      return rp.buffer_index.at(n);
  return -1;
}

/** Per sequence: rows of the queries in q_lr and of the keys in k_lr (one slice each). */
void plan_sequences(const BufferPlacement& q_lr, const BufferPlacement& k_lr, int64_t query_group, PredictorPlan& pp,
                    const std::string& at) {
  int64_t row = 0;
  for (const TokenSlice& t : q_lr.tokens) {
    if (t.range.stride != 1 || t.seq != int(pp.seqs.size()))
      throw UserError(at + ": q_lr must hold one contiguous slice per sequence, in order");
    PredictorPlan::Seq s;
    s.q_row = row;
    s.queries = t.range.size();
    s.proxies = (s.queries + query_group - 1) / query_group;
    s.first_proxy = pp.proxies;
    pp.proxies += s.proxies;
    row += s.queries;
    int64_t krow = 0;
    bool found = false;
    for (const TokenSlice& k : k_lr.tokens) {
      if (k.seq == t.seq && k.range.stride == 1) {
        if (found)
          throw UserError(at + ": k_lr must hold each sequence's keys as one slice");
        s.k_row = krow;
        s.keys = k.range.size();
        found = true;
      }
      krow += k.range.size();
    }
    if (!found)
      throw UserError(at + ": k_lr holds no keys of sequence " + std::to_string(t.seq));
    pp.seqs.push_back(s);
  }
}

} // namespace

void plan_predictors(const RankProgram& p, const Workload& w, RankExecPlan& rp) {
  const int per = w.heads / w.kv_heads;
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::COMPUTE || (op.compute != ComputeKind::LOWRANK_QK && op.compute != ComputeKind::TOPK))
      continue;
    const std::string at = op_where(p.rank, op);
    PredictorPlan pp;
    pp.q = find(rp, op.reads, "q");
    pp.k = find(rp, op.reads, "k");
    if (pp.q >= 0 || pp.k >= 0) { // the projections
      pp.kind = PredictorPlan::PROJECT;
      pp.q_lr = find(rp, op.writes, "q_lr");
      pp.k_lr = find(rp, op.writes, "k_lr");
      if (pp.q < 0 || pp.k < 0 || pp.q_lr < 0 || pp.k_lr < 0 || op.compute != ComputeKind::LOWRANK_QK)
        throw UserError(at + ": a projection reads q and k and writes q_lr and k_lr");
      const BufferPlacement &q = rp.buffers[size_t(pp.q)], &k = rp.buffers[size_t(pp.k)];
      const BufferPlacement &ql = rp.buffers[size_t(pp.q_lr)], &kl = rp.buffers[size_t(pp.k_lr)];
      if (q.tokens != ql.tokens || q.head_ids != ql.head_ids || k.tokens != kl.tokens || k.head_ids != kl.head_ids)
        throw UserError(at + ": q_lr (k_lr) must hold the rows and heads of the q (k) it projects");
      if (ql.head_width != kl.head_width || ql.head_width < 1 || ql.elem_bytes != 2 || q.elem_bytes != 2 || k.elem_bytes != 2)
        throw UserError(at + ": q_lr and k_lr must be bf16 of one rank d_lr");
      pp.rank_lr = ql.head_width;
      const int64_t flops = 2 * (q.rows * q.heads + k.rows * k.heads) * q.head_width * pp.rank_lr;
      if (flops != op.flops)
        throw UserError(at + ": its GEMMs take " + std::to_string(flops) + " FLOPs, the op says " + std::to_string(op.flops));
      rp.predictors[op.id] = std::move(pp);
      continue;
    }
    pp.kind = op.compute == ComputeKind::TOPK ? PredictorPlan::TOPK : PredictorPlan::SCORES;
    pp.q_lr = find(rp, op.reads, "q_lr");
    pp.k_lr = find(rp, op.reads, "k_lr");
    pp.threshold = find(rp, pp.kind == PredictorPlan::TOPK ? op.reads : op.writes, "staging");
    if (pp.kind == PredictorPlan::TOPK)
      pp.index = find(rp, op.writes, "index");
    if (pp.q_lr < 0 || pp.k_lr < 0 || pp.threshold < 0 || (pp.kind == PredictorPlan::TOPK && pp.index < 0))
      throw UserError(at + ": the estimate reads q_lr and k_lr and writes a threshold per proxy; the top-k also reads "
                      "that and writes an index");
    if (op.granularity < 1)
      throw UserError(at + ": needs its proxy stride ('granularity', queries per proxy)");
    pp.query_group = op.granularity;
    const BufferPlacement &ql = rp.buffers[size_t(pp.q_lr)], &kl = rp.buffers[size_t(pp.k_lr)];
    pp.rank_lr = ql.head_width;
    if (kl.head_width != pp.rank_lr)
      throw UserError(at + ": q_lr and k_lr differ in rank");
    plan_sequences(ql, kl, pp.query_group, pp, at);
    for (int h : ql.head_ids) {
      pp.kv_pos.push_back(kl.head_pos(h / per));
      if (pp.kv_pos.back() < 0)
        throw UserError(at + ": k_lr does not hold KV head " + std::to_string(h / per));
    }
    const int64_t heads = ql.heads;
    pp.keep = op.keep;
    if (int64_t(pp.keep.size()) != int64_t(pp.seqs.size()) * heads)
      throw UserError(at + ": 'keep' has " + std::to_string(pp.keep.size()) + " entries for " +
                      std::to_string(pp.seqs.size()) + " sequences x " + std::to_string(heads) + " heads");
    int64_t entries = 0;
    for (size_t s = 0; s < pp.seqs.size(); ++s)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t k = pp.keep[s * size_t(heads) + size_t(h)];
        if (k > pp.seqs[s].keys)
          throw UserError(at + ": keeps " + std::to_string(k) + " keys of a sequence of " + std::to_string(pp.seqs[s].keys));
        pp.index_offset.push_back(entries);
        entries += pp.seqs[s].proxies * k;
      }
    if (rp.buffers[size_t(pp.threshold)].bytes != 8 * pp.proxies * heads)
      throw UserError(at + ": its threshold buffer '" + rp.buffers[size_t(pp.threshold)].name + "' must hold 8 bytes per proxy and head (" +
                      std::to_string(8 * pp.proxies * heads) + ")");
    if (pp.kind == PredictorPlan::TOPK) {
      if (rp.buffers[size_t(pp.index)].bytes != 4 * entries)
        throw UserError(at + ": its index '" + rp.buffers[size_t(pp.index)].name + "' must hold " + std::to_string(entries) +
                        " int32 entries");
      // the requests of sparse SCP: per member, the tokens my K receives from it name
      for (const auto& n : op.writes) {
        const BufferPlacement& b = rp.buffer(n);
        if (b.tensor != "staging" || n == rp.buffers[size_t(pp.index)].name)
          continue;
        (pp.counts < 0 ? pp.counts : pp.requests) = rp.buffer_index.at(n);
      }
      if (pp.counts >= 0) {
        if (pp.requests < 0)
          throw UserError(at + ": writes request counts but no request triples");
        std::map<int, std::vector<int32_t>> by_peer;
        std::set<int> members; // the SCP members the counts go to (HCP members send K too, but are not asked)
        for (const Op& x : p.ops)
          if (x.kind == OpKind::SEND && x.reads.at(0) == rp.buffers[size_t(pp.counts)].name)
            members.insert(x.peer);
        for (const Op& r : p.ops)
          if (r.kind == OpKind::RECV && members.count(r.peer))
            for (const BufferRegion& g : r.regions) {
              const BufferPlacement& b = rp.buffer(g.buffer);
              if (b.tensor != "k")
                continue;
              for (const TokenSlice& t : g.tokens.empty() ? b.tokens : g.tokens)
                for (int64_t i = 0; i < t.range.size(); ++i)
                  for (int kvh : b.head_ids)
                    by_peer[r.peer].insert(by_peer[r.peer].end(), {t.seq, kvh, int32_t(t.range.at(i))});
            }
        for (const auto& [peer, triples] : by_peer) {
          pp.count_values.push_back(int32_t(triples.size() / 3));
          pp.request_values.insert(pp.request_values.end(), triples.begin(), triples.end());
        }
        // the buffers carry the first bytes of these; the sends move the IR's sizes from them
        pp.count_values.resize(size_t(rp.buffers[size_t(pp.counts)].bytes / 4), 0);
        pp.request_values.resize(size_t(rp.buffers[size_t(pp.requests)].bytes / 4), 0);
      }
    }
    rp.predictors[op.id] = std::move(pp);
  }
}

} // namespace cpsim::backend
