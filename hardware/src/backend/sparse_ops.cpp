// The IR's compute ops on the GPU. PIT's gather builds the micro-tile index from the flags of the candidate
// micro-tiles (what the sparsity pattern says) and copies the indexed rows (K, V; or Q, dO, O, LSE) into dense
// tiles; its backward gather reuses that index; its scatter sums the gathered gradient rows back into their home rows. DSV's predictor
// projects q and k on CUDA cores (bf16 in, fp32 sums) through fixed random d x d_lr matrices the backend owns (the
// IR prices the products, not the weights), then estimates and selects in two passes. COPY ops copy rows matched
// by token. The static tables these kernels read come from the exec plan and are uploaded once.
#include "rank_executor.hpp"

#include "buffer_plan.hpp"
#include "gather_kernels.hpp"
#include "gather_tables.hpp"
#include "gpu_check.hpp"
#include "helper_kernels.hpp"
#include "predictor_kernels.hpp"


#include <algorithm>


namespace cpsim::backend {

template <class T> T* RankExecutor::upload(const std::vector<T>& v) {
  void* p = nullptr;
  BK_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(v.size() * sizeof(T), 16)));
  tables_.push_back(p);
  if (!v.empty())
    BK_CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

void RankExecutor::prepare_compute() {
  for (const auto& [id, g] : rp_.gathers) {
    const GatherEntries e = gather_entries(g, rp_, sc_.workload);
    GatherTables tb;
    tb.items = int64_t(e.flag_off.size());
    tb.flags = upload(e.flags);
    tb.flag_off = upload(e.flag_off);
    tb.n_cand = upload(e.n_cand);
    tb.first_cand = upload(e.first_cand);
    tb.entry_off = upload(e.entry_off);
    tb.entry_src_row0 = upload(e.src_row0);
    tb.entry_head = upload(e.head);
    tb.entry_dst_row = upload(e.dst_row);
    tb.entry_lo = upload(e.lo);
    tb.entry_hi = upload(e.hi);
    gather_tables_[id] = tb;
  }
  auto unit_tables = [&](const UnitSources& u, int64_t packed_row_bytes, int64_t home_elem_bytes) {
    std::vector<int64_t> dst, src;
    for (int64_t x : u.unit_elem)
      dst.push_back(x * home_elem_bytes);
    for (int64_t r : u.rows)
      src.push_back(r * packed_row_bytes);
    UnitTables tb;
    tb.units = int64_t(u.unit_elem.size());
    tb.unit_elems = u.unit_elems;
    tb.unit_dst = upload(dst);
    tb.unit_lse = upload(u.unit_lse);
    tb.copy_begin = upload(u.begin);
    tb.copy_src = upload(src);
    tb.unit_heads = u.unit_heads;
    return tb;
  };
  for (const auto& [id, sp] : rp_.scatters) {
    const GatherLayout& g = rp_.gathers.at(sp.gather);
    const BufferPlacement& dst = rp_.buffers[size_t(sp.dst)];
    if (dst.elem_bytes != 2)
      throw GpuError("PIT scatter op " + std::to_string(id) + ": its home buffer '" + dst.name + "' is not bf16");
    scatter_tables_[id] = unit_tables(scatter_units(sp, rp_, sc_.workload), g.row_elems * 2, 2);
  }
  for (const auto& [id, m] : rp_.forward_merges) {
    if (m.kind != ForwardMerge::PACKED)
      continue;
    if (rp_.buffers[size_t(m.out)].elem_bytes != 2 || rp_.buffers[size_t(m.lse_out)].elem_bytes != 4)
      throw GpuError("PIT scatter-merge op " + std::to_string(id) + ": its output must be bf16 and its lse fp32");
    scatter_tables_[id] = unit_tables(packed_merge_units(m, rp_, sc_.workload), 1, 1); // elements and packed rows
  }
  for (const auto& [id, pp] : rp_.predictors) {
    PredictorTables tb;
    if (pp.kind == PredictorPlan::PROJECT) {
      // the projections W_q, W_k: d x d_lr bf16 in [-1, 1), the deterministic values of tensors 5 and 6 (their scale
      // does not change which keys the top-k selects)
      const int64_t d = rp_.buffers[size_t(pp.q)].head_width, lr = pp.rank_lr;
      std::vector<uint8_t> none(size_t(d * lr * 2), 0);
      tb.w_q = upload(none);
      tb.w_k = upload(none);
      fill_input_bf16(tb.w_q, d, 0, 1, 0, 1, int(lr), 5, 0, streams_[0]);
      fill_input_bf16(tb.w_k, d, 0, 1, 0, 1, int(lr), 6, 0, streams_[0]);
      predictor_tables_[id] = tb;
      continue;
    }
    std::vector<int64_t> bseq, bhead, bproxy, qrow, nq, fproxy, krow, nk;
    const int heads = rp_.buffers[size_t(pp.q_lr)].heads;
    for (size_t s = 0; s < pp.seqs.size(); ++s) {
      const auto& q = pp.seqs[s];
      qrow.push_back(q.q_row);
      nq.push_back(q.queries);
      fproxy.push_back(q.first_proxy);
      krow.push_back(q.k_row);
      nk.push_back(q.keys);
      for (int h = 0; h < heads; ++h)
        for (int64_t p = 0; p < q.proxies; p += kPredictorProxies) {
          bseq.push_back(int64_t(s));
          bhead.push_back(h);
          bproxy.push_back(p);
        }
    }
    tb.blocks = int64_t(bseq.size());
    tb.block_seq = upload(bseq);
    tb.block_head = upload(bhead);
    tb.block_proxy = upload(bproxy);
    tb.seq_q_row = upload(qrow);
    tb.seq_queries = upload(nq);
    tb.seq_first_proxy = upload(fproxy);
    tb.seq_k_row = upload(krow);
    tb.seq_keys = upload(nk);
    tb.kv_pos = upload(std::vector<int32_t>(pp.kv_pos.begin(), pp.kv_pos.end()));
    tb.keep = upload(pp.keep);
    tb.index_offset = upload(pp.index_offset);
    if (pp.counts >= 0) {
      tb.counts = upload(pp.count_values);
      tb.requests = upload(pp.request_values);
    }
    predictor_tables_[id] = tb;
  }
}

void RankExecutor::issue_compute(const Op& op, cudaStream_t st) {
  switch (op.compute) {
  case ComputeKind::GATHER: {
    const GatherLayout& g = rp_.gathers.at(op.id);
    const GatherTables& tb = gather_tables_.at(op.id);
    auto* index = static_cast<int32_t*>(ptr(g.index));
    if (g.builds_index)
      build_microtile_index(index, tb.flags, tb.flag_off, tb.n_cand, tb.first_cand, tb.entry_off, tb.items, st);
    MicrotileGather a;
    for (const GatherPlaneCopy& pl : gather_planes(g)) {
      const BufferPlacement &b = rp_.buffers[size_t(pl.src)], &d = rp_.buffers[size_t(pl.dst)];
      a.planes[a.n_planes++] = {static_cast<const char*>(ptr(pl.src)) + pl.src_plane * b.plane_bytes(), b.row_bytes(),
                                b.head_width * b.elem_bytes, static_cast<char*>(ptr(pl.dst)) + pl.dst_offset * d.elem_bytes,
                                pl.row_elems * d.elem_bytes};
    }
    a.granularity = g.granularity;
    a.index = index;
    a.entry_src_row0 = tb.entry_src_row0;
    a.entry_head = tb.entry_head;
    a.entry_dst_row = tb.entry_dst_row;
    a.entry_lo = tb.entry_lo;
    a.entry_hi = tb.entry_hi;
    a.entries = g.entries;
    gather_microtiles(a, st);
    return;
  }
  case ComputeKind::SCATTER: {
    const ScatterPlan& sp = rp_.scatters.at(op.id);
    const GatherLayout& g = rp_.gathers.at(sp.gather);
    const UnitTables& tb = scatter_tables_.at(op.id);
    GradientScatter a;
    a.planes = g.rows ? 1 : 2;
    a.src = static_cast<const char*>(ptr(sp.src));
    a.src_plane_bytes = g.packed_rows * g.row_elems * 2;
    a.dst = static_cast<char*>(ptr(sp.dst));
    a.dst_plane_bytes = rp_.buffers[size_t(sp.dst)].plane_bytes();
    a.unit_elems = tb.unit_elems;
    a.unit_dst = tb.unit_dst;
    a.copy_begin = tb.copy_begin;
    a.copy_src = tb.copy_src;
    a.units = tb.units;
    scatter_gradients(a, st);
    return;
  }
  case ComputeKind::LOWRANK_QK:
  case ComputeKind::TOPK: {
    const PredictorPlan& pp = rp_.predictors.at(op.id);
    const PredictorTables& tb = predictor_tables_.at(op.id);
    if (pp.kind == PredictorPlan::PROJECT) { // every (row, head) vector of q and k through W_q, W_k
      auto project = [&](int in, int out, const void* w) {
        const BufferPlacement& b = rp_.buffers[size_t(in)];
        project_rows(ptr(out), ptr(in), w, b.rows * b.heads, int(b.head_width), int(pp.rank_lr), st);
      };
      project(pp.q, pp.q_lr, tb.w_q);
      project(pp.k, pp.k_lr, tb.w_k);
      return;
    }
    const BufferPlacement &ql = rp_.buffers[size_t(pp.q_lr)], &kl = rp_.buffers[size_t(pp.k_lr)];
    PredictorArgs a;
    a.q_lr = ptr(pp.q_lr);
    a.k_lr = ptr(pp.k_lr);
    a.q_row_elems = ql.width;
    a.k_row_elems = kl.width;
    a.rank = int(pp.rank_lr);
    a.heads = ql.heads;
    a.query_group = pp.query_group;
    a.block_seq = tb.block_seq;
    a.block_head = tb.block_head;
    a.block_proxy = tb.block_proxy;
    a.blocks = tb.blocks;
    a.seq_q_row = tb.seq_q_row;
    a.seq_queries = tb.seq_queries;
    a.seq_first_proxy = tb.seq_first_proxy;
    a.seq_k_row = tb.seq_k_row;
    a.seq_keys = tb.seq_keys;
    a.kv_pos = tb.kv_pos;
    a.keep = tb.keep;
    a.index_offset = tb.index_offset;
    a.threshold = static_cast<uint32_t*>(ptr(pp.threshold));
    if (pp.kind == PredictorPlan::SCORES) {
      predictor_thresholds(a, st);
      return;
    }
    a.index = static_cast<int32_t*>(ptr(pp.index));
    predictor_topk(a, st);
    if (pp.counts >= 0) { // what sparse SCP asks each member for (predictor_plan.cpp)
      BK_CUDA_CHECK(cudaMemcpyAsync(ptr(pp.counts), tb.counts, pp.count_values.size() * 4, cudaMemcpyDeviceToDevice, st));
      BK_CUDA_CHECK(cudaMemcpyAsync(ptr(pp.requests), tb.requests, pp.request_values.size() * 4, cudaMemcpyDeviceToDevice, st));
    }
    return;
  }
  case ComputeKind::COPY:
    for (const MergeAdd& m : rp_.copies.at(op.id)) { // rows of one buffer into another, matched by token
      const BufferPlacement &s = rp_.buffers[size_t(m.src)], &d = rp_.buffers[size_t(m.dst)];
      for (int plane = 0; plane < d.planes; ++plane)
        convert_2d(static_cast<char*>(ptr(m.dst)) + plane * d.plane_bytes() + m.block.dst_row * d.row_bytes() +
                       int64_t(m.dst_head) * d.head_width * d.elem_bytes,
                   d.elem_bytes, d.width * m.block.dst_step,
                   static_cast<const char*>(ptr(m.src)) + plane * s.plane_bytes() + m.block.src_row * s.row_bytes() +
                       int64_t(m.src_head) * s.head_width * s.elem_bytes,
                   s.elem_bytes, s.width * m.block.src_step, m.block.rows, m.heads * d.head_width, st);
    }
    return;
  }
}

} // namespace cpsim::backend
