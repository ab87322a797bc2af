// The CPU emulator's compute ops (see plan_emulator.hpp): attention launches over exactly the cells their kernel plans
// list, the forward and backward merges, PIT's gather and scatter, DSV's predictor outputs the plan fixes, and copies;
// each mirrors its GPU twin (rank_executor.cpp, merge_ops.cpp, sparse_ops.cpp) on doubles.
#include "plan_emulator_internal.hpp"

#include "attention_tensors.hpp"
#include "buffer_plan.hpp"
#include "gather_tables.hpp"
#include "kernel_plans.hpp"
#include "op_plans.hpp"

#include "cpsim/model/errors.hpp"

namespace cpsim::backend::emulator {

namespace kn = cpsim::kernels;

void Emulator::zero_before(int rank, const Op& o) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  if (auto z = rp.zero_before.find(o.id); z != rp.zero_before.end())
    for (int b : z->second)
      std::fill(mem_[size_t(rank)][size_t(b)].begin(), mem_[size_t(rank)][size_t(b)].end(), 0.0);
}

void Emulator::attention(int rank, const Op& o) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  zero_before(rank, o);
  if (auto pf = rp.prefill.find(o.id); pf != rp.prefill.end())
    for (int b : pf->second) {
      auto& m = mem_[size_t(rank)][size_t(b)];
      std::fill(m.begin(), m.end(), is_lse(buf(rank, b).tensor) ? kNegInf : 0.0);
    }
  const int per = w_.heads / w_.kv_heads, D = w_.head_dim, E = std::min(opt_.value_dims, D);
  const double scale = 1.0 / std::sqrt(double(D));
  for (const AttnLaunch& l : rp.launches.at(o.id)) {
    // the kernel plan exactly as compute_kernels.cpp builds it
    PlannedKernel k;
    if (l.gather >= 0) {
      k = gathered_plan(rp.gathers.at(l.gather), l.slot, mask_, l.head_begin);
    } else if (mask_.per_head()) {
      k = per_head_plan(l.segments, mask_, l.head_begin, l.head_end);
    } else {
      std::vector<kn::PlanSegment> segs;
      int n_seqs = 0;
      for (const SegmentRows& sg : l.segments) {
        segs.push_back({sg.seq, sg.q_row, sg.q.begin, sg.q.stride, sg.q.size(), sg.k_row, sg.k.begin, sg.k.stride, sg.k.size()});
        n_seqs = std::max(n_seqs, sg.seq + 1);
      }
      k.mask = kernel_mask(mask_, n_seqs);
      k.plan = kn::plan_segments(segs, k.mask);
    }
    const kn::KernelPlan& p = k.plan;
    const AttnTensors t = attention_tensors(o, l, rp, w_);
    auto at = [&](const TensorRef& r, int64_t row, int h, int64_t e, int64_t head_elems) -> double& {
      if (r.buffer < 0)
        throw UserError(op_where(rank, o) + ": a launch tensor the kernels need has no buffer");
      return el(rank, r.buffer, r.offset_bytes + ((row * r.heads + h - r.head_begin) * head_elems + e) * r.elem_bytes);
    };
    const size_t nq = p.q_tiles.size();
    // the cells of (query tile qt, row i) for head h: (key tile, key row) pairs
    auto cells = [&](int h, size_t qt, int64_t i) {
      std::vector<std::pair<size_t, int64_t>> out;
      const size_t item = size_t(p.head_slots == 1 ? 0 : h - l.head_begin) * nq + qt;
      const kn::TileRange& tq = p.q_tiles[qt];
      for (int32_t e = p.fwd.offsets[item]; e < p.fwd.offsets[item + 1]; ++e) {
        const size_t kt = size_t(p.fwd.idx[size_t(e)]);
        const kn::TileRange& tk = p.k_tiles[kt];
        const bool full = e - p.fwd.offsets[item] < p.fwd.n_full[item];
        for (int64_t j = 0; j < tk.n; ++j)
          if (full || k.mask.visible(tq.seq, tq.pos(i), tk.pos(j)))
            out.push_back({kt, j});
      }
      return out;
    };
    auto score = [&](int h, int64_t qrow, int64_t krow) {
      double v = 0;
      for (int e = 0; e < E; ++e)
        v += at(t.q, qrow, h, e, D) * at(t.k, krow, h / per, e, D);
      return v * scale;
    };
    if (o.dir == Direction::FORWARD) {
      for (int h = l.head_begin; h < l.head_end; ++h)
        for (size_t qt = 0; qt < nq; ++qt)
          for (int64_t i = 0; i < p.q_tiles[qt].n; ++i) {
            const int64_t qrow = p.q_tiles[qt].row0 + i;
            const auto cs = cells(h, qt, i);
            double mx = kNegInf, sum = 0;
            std::vector<double> sc;
            for (auto& [kt, j] : cs) {
              sc.push_back(score(h, qrow, p.k_tiles[kt].row0 + j));
              mx = std::max(mx, sc.back());
            }
            for (double v : sc)
              sum += std::exp(v - mx);
            const double L = cs.empty() ? kNegInf : mx + std::log(sum);
            at(t.lse, qrow, h, 0, 1) = L;
            std::vector<double> acc(size_t(D), 0.0); // elements past E are 0 in every input, so in every output
            for (size_t c = 0; c < cs.size(); ++c) {
              const double pr = std::exp(sc[c] - L);
              for (int e = 0; e < E; ++e)
                acc[size_t(e)] += pr * at(t.v, p.k_tiles[cs[c].first].row0 + cs[c].second, h / per, e, D);
            }
            for (int64_t e = 0; e < D; ++e)
              at(t.o, qrow, h, e, D) = acc[size_t(e)];
          }
      continue;
    }
    // backward as the two kernels walk it: dQ per planned query row (= or +=) over the forward lists; dK and dV per
    // planned key row and KV head of the launch (=) over the backward (transposed) lists, summed over the query heads
    const size_t nk = p.k_tiles.size();
    auto ds_of = [&](int h, int64_t qrow, int64_t krow, double L, double delta, double* pr_out) {
      const double pr = std::exp(score(h, qrow, krow) - L);
      double dp = 0;
      for (int e = 0; e < E; ++e)
        dp += at(t.dout, qrow, h, e, D) * at(t.v, krow, h / per, e, D);
      *pr_out = pr;
      return pr * (dp - delta);
    };
    auto delta_of = [&](int64_t qrow, int h) {
      double d = 0;
      for (int e = 0; e < E; ++e)
        d += at(t.dout, qrow, h, e, D) * at(t.out, qrow, h, e, D);
      return d;
    };
    for (int h = l.head_begin; h < l.head_end; ++h)
      for (size_t qt = 0; qt < nq; ++qt)
        for (int64_t i = 0; i < p.q_tiles[qt].n; ++i) {
          const int64_t qrow = p.q_tiles[qt].row0 + i;
          const double L = at(t.lse_in, qrow, h, 0, 1), delta = delta_of(qrow, h);
          std::vector<double> dq(size_t(D), 0.0);
          for (auto& [kt, j] : cells(h, qt, i)) {
            if (L == kNegInf)
              break;
            const int64_t krow = p.k_tiles[kt].row0 + j;
            double pr = 0;
            const double ds = ds_of(h, qrow, krow, L, delta, &pr);
            for (int e = 0; e < E; ++e)
              dq[size_t(e)] += scale * ds * at(t.k, krow, h / per, e, D);
          }
          for (int64_t e = 0; e < D; ++e)
            at(t.dq, qrow, h, e, D) = (t.dq_accumulate ? at(t.dq, qrow, h, e, D) : 0.0) + dq[size_t(e)];
        }
    for (size_t kt = 0; kt < nk; ++kt) {
      const kn::TileRange& tk = p.k_tiles[kt];
      for (int g = l.head_begin / per; g <= (l.head_end - 1) / per; ++g) {
        std::vector<double> dk(size_t(tk.n * D), 0.0), dv(dk.size(), 0.0);
        for (int h = std::max(l.head_begin, g * per); h < std::min(l.head_end, (g + 1) * per); ++h) {
          const size_t item = size_t(p.head_slots == 1 ? 0 : h - l.head_begin) * nk + kt;
          for (int32_t e = p.bwd.offsets[item]; e < p.bwd.offsets[item + 1]; ++e) {
            const size_t qt = size_t(p.bwd.idx[size_t(e)]);
            const kn::TileRange& tq = p.q_tiles[qt];
            const bool full = e - p.bwd.offsets[item] < p.bwd.n_full[item];
            for (int64_t i = 0; i < tq.n; ++i) {
              const int64_t qrow = tq.row0 + i;
              const double L = at(t.lse_in, qrow, h, 0, 1);
              if (L == kNegInf)
                continue;
              const double delta = delta_of(qrow, h);
              for (int64_t j = 0; j < tk.n; ++j) {
                if (!full && !k.mask.visible(tq.seq, tq.pos(i), tk.pos(j)))
                  continue;
                double pr = 0;
                const double ds = ds_of(h, qrow, tk.row0 + j, L, delta, &pr);
                for (int x = 0; x < E; ++x) {
                  dk[size_t(j * D + x)] += scale * ds * at(t.q, qrow, h, x, D);
                  dv[size_t(j * D + x)] += pr * at(t.dout, qrow, h, x, D);
                }
              }
            }
          }
        }
        for (int64_t j = 0; j < tk.n; ++j)
          for (int64_t x = 0; x < D; ++x) {
            if (t.dk.buffer >= 0)
              at(t.dk, tk.row0 + j, g, x, D) = dk[size_t(j * D + x)];
            if (t.dv.buffer >= 0)
              at(t.dv, tk.row0 + j, g, x, D) = dv[size_t(j * D + x)];
          }
      }
    }
  }
}

void Emulator::forward_merge(int rank, const Op& o, const ForwardMerge& m) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  const int D = w_.head_dim;
  auto& mem = mem_[size_t(rank)];
  if (m.kind == ForwardMerge::NWAY) {
    auto idx = [&](int b, int64_t row, int h, int64_t e, int64_t hw) {
      const BufferPlacement& bp = rp.buffers[size_t(b)];
      return size_t(row * bp.width + (h - bp.head_begin) * hw + e);
    };
    for (const ForwardMerge::Run& run : m.runs)
      for (int64_t i = 0; i < run.rows; ++i)
        for (int h = o.head_begin; h < o.head_end; ++h) {
          double L = kNegInf;
          for (const auto& in : run.inputs)
            L = logaddexp(L, mem[size_t(in.lse)][idx(in.lse, in.row + i, h, 0, 1)]);
          mem[size_t(m.lse_out)][idx(m.lse_out, run.row + i, h, 0, 1)] = L;
          for (int64_t e = 0; e < D; ++e) {
            double acc = 0;
            for (const auto& in : run.inputs)
              if (L != kNegInf)
                acc += std::exp(mem[size_t(in.lse)][idx(in.lse, in.row + i, h, 0, 1)] - L) * mem[size_t(in.o)][idx(in.o, in.row + i, h, e, D)];
            mem[size_t(m.out)][idx(m.out, run.row + i, h, e, D)] = acc;
          }
        }
    return;
  }
  if (m.kind == ForwardMerge::PACKED) {
    const UnitSources u = packed_merge_units(m, rp, w_);
    const GatherLayout& g = rp.gathers.at(m.gather);
    for (size_t un = 0; un < u.unit_elem.size(); ++un)
      for (int hh = 0; hh < u.unit_heads; ++hh) {
        double L = kNegInf;
        for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c)
          L = logaddexp(L, mem[size_t(m.part_lse)][size_t(u.rows[size_t(c)] * g.row_heads + hh)]);
        mem[size_t(m.lse_out)][size_t(u.unit_lse[un] + hh)] = L;
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0;
          for (int64_t c = u.begin[un]; c < u.begin[un + 1] && L != kNegInf; ++c) {
            const int64_t pr = u.rows[size_t(c)];
            acc += std::exp(mem[size_t(m.part_lse)][size_t(pr * g.row_heads + hh)] - L) *
                   mem[size_t(m.part_o)][size_t(pr * g.row_elems + hh * D + e)];
          }
          mem[size_t(m.out)][size_t(u.unit_elem[un] + hh * D + e)] = acc;
        }
      }
    return;
  }
  const BufferPlacement &acc = rp.buffers[size_t(m.acc)], &pl = rp.buffers[size_t(m.part_lse)];
  auto& a = mem[size_t(m.acc)];
  if (m.kind == ForwardMerge::LSE_FOLD) {
    if (m.first)
      std::fill(a.begin(), a.end(), kNegInf);
    for (const RowBlock& b : m.blocks)
      for (int64_t i = 0; i < b.rows; ++i)
        for (int h = 0; h < acc.heads; ++h) {
          double& x = a[size_t((b.dst_row + i * b.dst_step) * acc.heads + h)];
          x = logaddexp(x, mem[size_t(m.part_lse)][size_t((b.src_row + i * b.src_step) * acc.heads + h)]);
        }
    return;
  }
  auto& out = mem[size_t(m.out)];
  if (m.first)
    std::fill(out.begin(), out.end(), 0.0);
  for (const RowBlock& b : m.blocks)
    for (int64_t i = 0; i < b.rows; ++i)
      for (int h = 0; h < pl.heads; ++h) {
        const int64_t sr = b.src_row + i * b.src_step, dr = b.dst_row + i * b.dst_step;
        const double lp = mem[size_t(m.part_lse)][size_t(sr * pl.heads + h)], la = a[size_t(dr * acc.heads + h)];
        if (lp == kNegInf)
          continue;
        for (int64_t e = 0; e < D; ++e)
          out[size_t((dr * pl.heads + h) * D + e)] += std::exp(lp - la) * mem[size_t(m.part_o)][size_t((sr * pl.heads + h) * D + e)];
      }
  if (m.lse_out >= 0)
    std::copy(a.begin(), a.end(), mem[size_t(m.lse_out)].begin());
}

void Emulator::merge(int rank, const Op& o) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  auto& mem = mem_[size_t(rank)];
  auto find = [&](const std::vector<std::string>& names, const std::string& tensor) {
    for (const auto& n : names)
      if (rp.buffer(n).tensor == tensor)
        return rp.buffer_index.at(n);
    return -1;
  };
  if (auto fm = rp.forward_merges.find(o.id); fm != rp.forward_merges.end()) {
    forward_merge(rank, o, fm->second);
    return;
  }
  if (o.dir == Direction::FORWARD) { // two-way into o_acc, lse_acc (lse_merge2), then the outputs from them
    const int po = find(o.reads, "o"), pl = find(o.reads, "lse"), ao = find(o.writes, "o_acc"), al = find(o.writes, "lse_acc");
    if (po < 0 || pl < 0 || ao < 0 || al < 0)
      throw UserError(op_where(rank, o) + ": a forward merge must read o and lse partials and write o_acc, lse_acc");
    const BufferPlacement& acc = rp.buffers[size_t(ao)];
    const int D = w_.head_dim;
    for (int64_t r = 0; r < acc.rows; ++r)
      for (int h = 0; h < acc.heads; ++h) {
        double& la = mem[size_t(al)][size_t(r * acc.heads + h)];
        const double lp = mem[size_t(pl)][size_t(r * acc.heads + h)];
        const double L = o.inputs <= 1 ? lp : logaddexp(la, lp);
        for (int64_t e = 0; e < D; ++e) {
          double& x = mem[size_t(ao)][size_t((r * acc.heads + h) * D + e)];
          const double part = mem[size_t(po)][size_t((r * acc.heads + h) * D + e)];
          if (o.inputs <= 1)
            x = part;
          else
            x = (la == kNegInf ? 0.0 : std::exp(la - L) * x) + (lp == kNegInf ? 0.0 : std::exp(lp - L) * part);
        }
        la = L;
      }
    for (const auto& n : o.writes) {
      const int b = rp.buffer_index.at(n);
      if (rp.buffers[size_t(b)].tensor == "o")
        mem[size_t(b)] = mem[size_t(ao)];
      else if (rp.buffers[size_t(b)].tensor == "lse")
        mem[size_t(b)] = mem[size_t(al)];
    }
    return;
  }
  zero_before(rank, o);
  if (auto a = rp.merge_adds.find(o.id); a != rp.merge_adds.end())
    for (const MergeAdd& m : a->second) {
      const BufferPlacement &s = rp.buffers[size_t(m.src)], &d = rp.buffers[size_t(m.dst)];
      for (int plane = 0; plane < d.planes; ++plane)
        for (int64_t i = 0; i < m.block.rows; ++i)
          for (int64_t e = 0; e < m.heads * d.head_width; ++e)
            mem[size_t(m.dst)][size_t(plane * d.rows * d.width + (m.block.dst_row + i * m.block.dst_step) * d.width + m.dst_head * d.head_width + e)] +=
                mem[size_t(m.src)][size_t(plane * s.rows * s.width + (m.block.src_row + i * m.block.src_step) * s.width + m.src_head * s.head_width + e)];
    }
  for (const auto& n : o.writes) {
    if (in_place(o, n))
      continue;
    const int wb = rp.buffer_index.at(n);
    bool first = true;
    for (const auto& r : o.reads) {
      const int rb = rp.buffer_index.at(r);
      if (r == n || tensor_family(rp.buffers[size_t(rb)].tensor) != tensor_family(rp.buffers[size_t(wb)].tensor))
        continue;
      if (mem[size_t(rb)].size() != mem[size_t(wb)].size())
        throw UserError(op_where(rank, o) + ": '" + r + "' and '" + n + "' differ in size");
      for (size_t i = 0; i < mem[size_t(wb)].size(); ++i)
        mem[size_t(wb)][i] = (first ? 0.0 : mem[size_t(wb)][i]) + mem[size_t(rb)][i];
      first = false;
    }
  }
}

void Emulator::compute(int rank, const Op& o) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  auto& mem = mem_[size_t(rank)];
  switch (o.compute) {
  case ComputeKind::GATHER: {
    const GatherLayout& g = rp.gathers.at(o.id);
    const std::vector<GatherPlaneCopy> planes = gather_planes(g);
    for (const GatheredRun& run : gathered_runs(gather_entries(g, rp, w_), g.granularity))
      for (const GatherPlaneCopy& pl : planes) {
        const BufferPlacement& sb = rp.buffers[size_t(pl.src)];
        for (int64_t x = 0; x < run.rows; ++x)
          for (int64_t k = 0; k < pl.row_elems; ++k)
            mem[size_t(pl.dst)][size_t(pl.dst_offset + (run.dst_row + x) * pl.row_elems + k)] =
                mem[size_t(pl.src)][size_t(pl.src_plane * sb.rows * sb.width + (run.src_row + x) * sb.width + run.head * sb.head_width + k)];
      }
    return;
  }
  case ComputeKind::SCATTER: {
    const ScatterPlan& sp = rp.scatters.at(o.id);
    const GatherLayout& g = rp.gathers.at(sp.gather);
    const UnitSources u = scatter_units(sp, rp, w_);
    const BufferPlacement& dst = rp.buffers[size_t(sp.dst)];
    const int planes = g.rows ? 1 : 2;
    for (int plane = 0; plane < planes; ++plane)
      for (size_t un = 0; un < u.unit_elem.size(); ++un)
        for (int64_t k = 0; k < u.unit_elems; ++k) {
          double sum = 0;
          for (int64_t c = u.begin[un]; c < u.begin[un + 1]; ++c)
            sum += mem[size_t(sp.src)][size_t(plane * g.packed_rows * g.row_elems + u.rows[size_t(c)] * g.row_elems + k)];
          mem[size_t(sp.dst)][size_t(plane * dst.rows * dst.width + u.unit_elem[un] + k)] = sum;
        }
    return;
  }
  case ComputeKind::LOWRANK_QK:
  case ComputeKind::TOPK: {
    // the predictor does not steer the attention (it runs under the workload's mask); what the SCP exchange sends
    // is the plan's (predictor_plan.cpp)
    if (auto it = rp.predictors.find(o.id); it != rp.predictors.end() && it->second.counts >= 0) {
      const PredictorPlan& pp = it->second;
      for (size_t i = 0; i < pp.count_values.size(); ++i)
        mem[size_t(pp.counts)][i] = pp.count_values[i];
      for (size_t i = 0; i < pp.request_values.size(); ++i)
        mem[size_t(pp.requests)][i] = pp.request_values[i];
    }
    return;
  }
  case ComputeKind::COPY:
    for (const MergeAdd& m : rp.copies.at(o.id)) {
      const BufferPlacement &s = rp.buffers[size_t(m.src)], &d = rp.buffers[size_t(m.dst)];
      for (int plane = 0; plane < d.planes; ++plane)
        for (int64_t i = 0; i < m.block.rows; ++i)
          for (int64_t e = 0; e < m.heads * d.head_width; ++e)
            mem[size_t(m.dst)][size_t(plane * d.rows * d.width + (m.block.dst_row + i * m.block.dst_step) * d.width + m.dst_head * d.head_width + e)] =
                mem[size_t(m.src)][size_t(plane * s.rows * s.width + (m.block.src_row + i * m.block.src_step) * s.width + m.src_head * s.head_width + e)];
    }
    return;
  }
}

} // namespace cpsim::backend::emulator
