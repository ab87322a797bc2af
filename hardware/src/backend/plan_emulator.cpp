// The CPU emulator of exec plans; see plan_emulator.hpp. It mirrors rank_executor.cpp, sparse_ops.cpp,
// merge_ops.cpp and message_regions.cpp op by op, on doubles: buffers are element arrays (bytes / dtype size),
// messages are byte-addressed (elements at byte offset / 2), and a kernel launch computes exactly the cells its plan
// lists (and, in partial tiles, the plan's mask lets through).
#include "plan_emulator.hpp"

#include "attention_tensors.hpp"
#include "buffer_plan.hpp"
#include "gather_tables.hpp"
#include "kernel_plans.hpp"
#include "op_plans.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>

namespace cpsim::backend {

namespace {

namespace kn = cpsim::kernels;

constexpr double kNegInf = -INFINITY;

/** Inputs: a deterministic value in [-1, 1) per (tensor, sequence, position, head, element); 0 past `dims`. */
double input_value(int tensor, int seq, int64_t pos, int head, int64_t e, int dims) {
  if (e >= dims)
    return 0.0;
  uint64_t x = (uint64_t(tensor) << 58) ^ (uint64_t(seq) << 50) ^ (uint64_t(pos) << 22) ^ (uint64_t(head) << 10) ^ uint64_t(e);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb3fe1a85ec53ULL;
  x ^= x >> 33;
  return double(x >> 11) / double(1ULL << 53) * 2.0 - 1.0;
}

int input_tensor(const std::string& t, int plane) {
  if (t == "q")
    return 1;
  if (t == "kv")
    return plane == 0 ? 2 : 3;
  if (t == "k")
    return 2;
  if (t == "v")
    return 3;
  if (t == "do")
    return 4;
  return 0;
}

double logaddexp(double a, double b) {
  if (a == kNegInf)
    return b;
  if (b == kNegInf)
    return a;
  const double m = std::max(a, b);
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

/** Attention over the whole workload in fp64: O, LSE per (sequence, position, head); gradients when asked. */
struct Reference {
  int heads = 0, kv_heads = 0, dim = 0;
  std::vector<int64_t> seq_row;
  std::vector<double> o, lse, dq, dk, dv; // [row][head][dim], lse [row][head]
  double& at(std::vector<double>& t, int seq, int64_t pos, int head, int nh, int64_t e, int64_t w) {
    return t[size_t(((seq_row[size_t(seq)] + pos) * nh + head) * w + e)];
  }
};

Reference reference(const Scenario& sc, bool backward, int dims) {
  const Workload& w = sc.workload;
  const MaskGeometry m(w);
  Reference r;
  r.heads = w.heads;
  r.kv_heads = w.kv_heads;
  r.dim = w.head_dim;
  const int per = w.heads / w.kv_heads, D = w.head_dim, E = std::min(dims, D);
  int64_t rows = 0;
  for (int64_t n : w.seq_lens) {
    r.seq_row.push_back(rows);
    rows += n;
  }
  r.o.assign(size_t(rows * w.heads * D), 0.0);
  r.lse.assign(size_t(rows * w.heads), kNegInf);
  if (backward) {
    r.dq.assign(r.o.size(), 0.0);
    r.dk.assign(size_t(rows * w.kv_heads * D), 0.0);
    r.dv.assign(r.dk.size(), 0.0);
  }
  const double scale = 1.0 / std::sqrt(double(D));
  // the inputs' first E elements, [row][head][E]
  std::vector<double> in_q(size_t(rows * w.heads * E)), in_k(size_t(rows * w.kv_heads * E)), in_v(in_k.size()), in_do(in_q.size());
  for (size_t sq = 0; sq < w.seq_lens.size(); ++sq)
    for (int64_t i = 0; i < w.seq_lens[sq]; ++i)
      for (int e = 0; e < E; ++e) {
        const int64_t row = r.seq_row[sq] + i;
        for (int h = 0; h < w.heads; ++h) {
          in_q[size_t((row * w.heads + h) * E + e)] = input_value(1, int(sq), i, h, e, E);
          in_do[size_t((row * w.heads + h) * E + e)] = input_value(4, int(sq), i, h, e, E);
        }
        for (int g = 0; g < w.kv_heads; ++g) {
          in_k[size_t((row * w.kv_heads + g) * E + e)] = input_value(2, int(sq), i, g, e, E);
          in_v[size_t((row * w.kv_heads + g) * E + e)] = input_value(3, int(sq), i, g, e, E);
        }
      }
  auto Q = [&](int s, int64_t i, int h) { return &in_q[size_t(((r.seq_row[size_t(s)] + i) * w.heads + h) * E)]; };
  auto dO = [&](int s, int64_t i, int h) { return &in_do[size_t(((r.seq_row[size_t(s)] + i) * w.heads + h) * E)]; };
  auto K = [&](int s, int64_t j, int g) { return &in_k[size_t(((r.seq_row[size_t(s)] + j) * w.kv_heads + g) * E)]; };
  auto V = [&](int s, int64_t j, int g) { return &in_v[size_t(((r.seq_row[size_t(s)] + j) * w.kv_heads + g) * E)]; };
  for (size_t sq = 0; sq < w.seq_lens.size(); ++sq) {
    const int64_t n = w.seq_lens[sq];
    const int s = int(sq);
    for (int h = 0; h < w.heads; ++h)
      for (int64_t i = 0; i < n; ++i) {
        std::vector<std::pair<int64_t, double>> cells;
        for (int64_t j = 0; j < n; ++j)
          if (m.visible(s, h, i, j)) {
            const double *q = Q(s, i, h), *k = K(s, j, h / per);
            double v = 0;
            for (int e = 0; e < E; ++e)
              v += q[e] * k[e];
            cells.push_back({j, v * scale});
          }
        if (cells.empty())
          continue;
        double mx = kNegInf, sum = 0;
        for (auto& c : cells)
          mx = std::max(mx, c.second);
        for (auto& c : cells)
          sum += std::exp(c.second - mx);
        const double L = mx + std::log(sum);
        r.at(r.lse, s, i, h, w.heads, 0, 1) = L;
        double* o = &r.at(r.o, s, i, h, w.heads, 0, D);
        for (auto& c : cells) {
          const double p = std::exp(c.second - L), *v = V(s, c.first, h / per);
          for (int e = 0; e < E; ++e)
            o[e] += p * v[e];
        }
        if (!backward)
          continue;
        const double* d_o = dO(s, i, h);
        double delta = 0;
        for (int e = 0; e < E; ++e)
          delta += d_o[e] * o[e];
        double* dq = &r.at(r.dq, s, i, h, w.heads, 0, D);
        for (auto& c : cells) {
          const double p = std::exp(c.second - L), *v = V(s, c.first, h / per), *k = K(s, c.first, h / per), *q = Q(s, i, h);
          double dp = 0;
          for (int e = 0; e < E; ++e)
            dp += d_o[e] * v[e];
          const double ds = p * (dp - delta);
          double *dk = &r.at(r.dk, s, c.first, h / per, w.kv_heads, 0, D), *dv = &r.at(r.dv, s, c.first, h / per, w.kv_heads, 0, D);
          for (int e = 0; e < E; ++e) {
            dq[e] += scale * ds * k[e];
            dk[e] += scale * ds * q[e];
            dv[e] += p * d_o[e];
          }
        }
      }
  }
  return r;
}

/** A message in flight: elements by byte offset / 2 (a message may hold bf16 and fp32 regions). */
using Message = std::vector<double>;

class Emulator {
public:
  Emulator(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const EmulationOptions& opt)
      : s_(s), sc_(sc), w_(sc.workload), plan_(plan), opt_(opt), mask_(sc.workload) {
    for (const RankExecPlan& rp : plan.ranks) {
      std::vector<std::vector<double>> bufs;
      for (const BufferPlacement& b : rp.buffers)
        bufs.emplace_back(size_t(b.bytes / b.elem_bytes), 0.0);
      mem_.push_back(std::move(bufs));
    }
  }

  void run();
  std::vector<EmulatedResult> compare(const Reference& r) const;

private:
  double& el(int rank, int b, int64_t byte) { return mem_[size_t(rank)][size_t(b)][size_t(byte / elem(rank, b))]; }
  int elem(int rank, int b) const { return plan_.ranks[size_t(rank)].buffers[size_t(b)].elem_bytes; }
  const BufferPlacement& buf(int rank, int b) const { return plan_.ranks[size_t(rank)].buffers[size_t(b)]; }
  const Op& op(int rank, int id) const { return s_.ranks[size_t(rank)].ops[size_t(id)]; }

  void fill_inputs(int rank);
  void zero_before(int rank, const Op& o);
  void attention(int rank, const Op& o);
  void merge(int rank, const Op& o);
  void forward_merge(int rank, const Op& o, const ForwardMerge& m);
  void compute(int rank, const Op& o);
  void collective(const std::vector<std::pair<int, int>>& members); // (rank, op id)
  Message pack(int rank, const Op& o);
  void unpack(int rank, const Op& o, const Message& msg);

  const Schedule& s_;
  const Scenario& sc_;
  const Workload& w_;
  const ExecPlan& plan_;
  EmulationOptions opt_;
  MaskGeometry mask_;
  std::vector<std::vector<std::vector<double>>> mem_; // [rank][buffer][element]
};

void Emulator::fill_inputs(int rank) {
  const RankProgram& p = s_.ranks[size_t(rank)];
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  std::vector<bool> written(rp.buffers.size(), false);
  for (const Op& o : p.ops)
    for (const auto& n : o.writes)
      written[size_t(rp.buffer_index.at(n))] = true;
  for (size_t b = 0; b < rp.buffers.size(); ++b) {
    const BufferPlacement& bp = rp.buffers[b];
    if (written[b] || p.buffers[b].alloc_op >= 0 || bp.bytes == 0 || input_tensor(bp.tensor, 0) == 0)
      continue;
    auto& m = mem_[size_t(rank)][b];
    for (int plane = 0; plane < bp.planes; ++plane) {
      int64_t row = 0;
      for (const TokenSlice& t : bp.tokens)
        for (int64_t i = 0; i < t.range.size(); ++i, ++row)
          for (int hp = 0; hp < bp.heads; ++hp)
            for (int64_t e = 0; e < bp.head_width; ++e)
              m[size_t(plane * bp.rows * bp.width + row * bp.width + hp * bp.head_width + e)] =
                  input_value(input_tensor(bp.tensor, plane), t.seq, t.range.at(i), bp.head_ids[size_t(hp)], e, opt_.value_dims);
    }
  }
}

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
    const GatherEntries e = gather_entries(g, rp, w_);
    // the planes the executor copies: (source buffer, its plane, packed buffer, element offset there, elements a row)
    struct Plane {
      int src, src_plane, dst;
      int64_t dst_off, dst_row;
    };
    std::vector<Plane> planes;
    const int64_t plane_elems = g.packed_rows * g.row_elems;
    if (!g.rows) {
      planes = {{g.src[0], 0, g.packed, 0, g.row_elems}, {g.src[0], 1, g.packed, plane_elems, g.row_elems}};
    } else {
      for (size_t i = 0; i < g.src.size(); ++i)
        planes.push_back({g.src[i], 0, g.packed, int64_t(i) * plane_elems, g.row_elems});
      if (g.src_lse >= 0)
        planes.push_back({g.src_lse, 0, g.packed_lse, 0, g.row_heads});
    }
    int64_t entry = 0; // the index as the device builds it: the k-th set flag of an item is its k-th entry
    for (size_t item = 0; item < e.flag_off.size(); ++item)
      for (int32_t c = 0; c < e.n_cand[item]; ++c) {
        if (!e.flags[size_t(e.flag_off[item] + c)])
          continue;
        const int64_t id = e.first_cand[item] + c;
        const int64_t first = std::max(id * g.granularity, e.lo[size_t(entry)]);
        const int64_t end = std::min((id + 1) * g.granularity, e.hi[size_t(entry)]);
        for (const Plane& pl : planes) {
          const BufferPlacement& sb = rp.buffers[size_t(pl.src)];
          for (int64_t x = first; x < end; ++x)
            for (int64_t k = 0; k < pl.dst_row; ++k)
              mem[size_t(pl.dst)][size_t(pl.dst_off + (e.dst_row[size_t(entry)] + x - first) * pl.dst_row + k)] =
                  mem[size_t(pl.src)][size_t(pl.src_plane * sb.rows * sb.width + (e.src_row0[size_t(entry)] + x) * sb.width +
                                             e.head[size_t(entry)] * sb.head_width + k)];
        }
        ++entry;
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

void Emulator::collective(const std::vector<std::pair<int, int>>& members) {
  // element (piece, plane, row, column) of a piece in a buffer
  auto index = [](const BufferPlacement& b, int plane, int64_t row, int head_off, int64_t col) {
    const int64_t he = b.heads ? b.width / b.heads : 0;
    return size_t(plane * b.rows * b.width + row * b.width + head_off * he + col);
  };
  // locals first (a reduce-scatter adds the received pieces onto the own one)
  for (auto [r, id] : members) {
    const CollectivePlan& cp = plan_.ranks[size_t(r)].collectives.at(id);
    const BufferPlacement &src = buf(r, cp.src), &dst = buf(r, cp.dst);
    const int64_t he = src.heads ? src.width / src.heads : 0;
    for (const auto& pc : cp.local)
      for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane)
        for (int64_t i = 0; i < pc.block.rows; ++i)
          for (int64_t c = 0; c < pc.heads * he; ++c)
            mem_[size_t(r)][size_t(cp.dst)][index(dst, plane, pc.block.dst_row + i * pc.block.dst_step, pc.dst_head_offset, c)] =
                (pc.add ? mem_[size_t(r)][size_t(cp.dst)][index(dst, plane, pc.block.dst_row + i * pc.block.dst_step, pc.dst_head_offset, c)] : 0.0) +
                mem_[size_t(r)][size_t(cp.src)][index(src, plane, pc.block.src_row + i * pc.block.src_step, pc.src_head_offset, c)];
  }
  // the k-th piece rank a sends to b is the k-th piece b receives from a
  std::map<std::pair<int, int>, std::deque<std::vector<double>>> wire;
  for (auto [r, id] : members) {
    const CollectivePlan& cp = plan_.ranks[size_t(r)].collectives.at(id);
    const BufferPlacement& src = buf(r, cp.src);
    const int64_t he = src.heads ? src.width / src.heads : 0;
    for (const auto& pc : cp.sends) {
      std::vector<double> piece;
      for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane)
        for (int64_t i = 0; i < pc.block.rows; ++i)
          for (int64_t c = 0; c < pc.heads * he; ++c)
            piece.push_back(mem_[size_t(r)][size_t(cp.src)][index(src, plane, pc.block.src_row + i * pc.block.src_step, pc.src_head_offset, c)]);
      wire[{r, pc.peer}].push_back(std::move(piece));
    }
  }
  for (auto [r, id] : members) {
    const CollectivePlan& cp = plan_.ranks[size_t(r)].collectives.at(id);
    const BufferPlacement& dst = buf(r, cp.dst);
    const int64_t he = dst.heads ? dst.width / dst.heads : 0;
    for (const auto& pc : cp.recvs) {
      auto& q = wire[{pc.peer, r}];
      if (q.empty())
        throw UserError(op_where(r, op(r, id)) + ": receives a piece rank " + std::to_string(pc.peer) + " does not send");
      const std::vector<double> piece = std::move(q.front());
      q.pop_front();
      size_t k = 0;
      for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane)
        for (int64_t i = 0; i < pc.block.rows; ++i)
          for (int64_t c = 0; c < pc.heads * he; ++c) {
            if (k >= piece.size())
              throw UserError(op_where(r, op(r, id)) + ": a piece from rank " + std::to_string(pc.peer) + " is shorter than expected");
            double& x = mem_[size_t(r)][size_t(cp.dst)][index(dst, plane, pc.block.dst_row + i * pc.block.dst_step, pc.dst_head_offset, c)];
            x = cp.reduce || pc.add ? x + piece[k] : piece[k];
            ++k;
          }
    }
  }
}

Message Emulator::pack(int rank, const Op& o) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  Message msg(size_t((o.bytes + 1) / 2), 0.0);
  auto it = rp.messages.find(o.id);
  if (it == rp.messages.end() || it->second.direct) {
    const int b = it == rp.messages.end() ? rp.buffer_index.at(o.reads.at(0)) : it->second.buffer;
    const int64_t off = it == rp.messages.end() ? 0 : it->second.offset_bytes;
    const int eb = elem(rank, b);
    for (int64_t x = 0; x < o.bytes; x += eb)
      msg[size_t(x / 2)] = el(rank, b, off + x);
    return msg;
  }
  for (const MessagePiece& pc : it->second.pieces) {
    const BufferPlacement& b = rp.buffers[size_t(pc.buffer)];
    for (int64_t i = 0; i < pc.rows; ++i)
      for (int64_t c = 0; c < int64_t(pc.heads) * b.head_width; ++c)
        msg[size_t((pc.msg_offset_bytes + i * pc.msg_pitch_bytes + c * b.elem_bytes) / 2)] =
            mem_[size_t(rank)][size_t(pc.buffer)][size_t(pc.plane * b.rows * b.width + (pc.row + i * pc.step) * b.width + pc.head_pos * b.head_width + c)];
  }
  return msg;
}

void Emulator::unpack(int rank, const Op& o, const Message& msg) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  if (int64_t(msg.size()) != (o.bytes + 1) / 2)
    throw UserError(op_where(rank, o) + ": receives " + std::to_string(2 * msg.size()) + " bytes for " + std::to_string(o.bytes));
  auto it = rp.messages.find(o.id);
  if (it == rp.messages.end() || it->second.direct) {
    const int b = it == rp.messages.end() ? rp.buffer_index.at(o.writes.at(0)) : it->second.buffer;
    const int64_t off = it == rp.messages.end() ? 0 : it->second.offset_bytes;
    const int eb = elem(rank, b);
    for (int64_t x = 0; x < o.bytes; x += eb)
      el(rank, b, off + x) = msg[size_t(x / 2)];
    return;
  }
  for (const MessagePiece& pc : it->second.pieces) {
    const BufferPlacement& b = rp.buffers[size_t(pc.buffer)];
    for (int64_t i = 0; i < pc.rows; ++i)
      for (int64_t c = 0; c < int64_t(pc.heads) * b.head_width; ++c)
        mem_[size_t(rank)][size_t(pc.buffer)][size_t(pc.plane * b.rows * b.width + (pc.row + i * pc.step) * b.width + pc.head_pos * b.head_width + c)] =
            msg[size_t((pc.msg_offset_bytes + i * pc.msg_pitch_bytes + c * b.elem_bytes) / 2)];
  }
}

void Emulator::run() {
  const int R = int(plan_.ranks.size());
  for (int r = 0; r < R; ++r)
    fill_inputs(r);
  // per rank: the slots of each stream in issue order, the next one, what is done
  std::vector<std::map<int, std::vector<int>>> stream_slots(static_cast<size_t>(R));
  std::vector<std::map<int, size_t>> next(static_cast<size_t>(R));
  std::vector<std::vector<bool>> done(static_cast<size_t>(R)), posted(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    const auto& slots = plan_.ranks[size_t(r)].slots;
    done[size_t(r)].assign(slots.size(), false);
    posted[size_t(r)].assign(slots.size(), false);
    for (size_t i = 0; i < slots.size(); ++i)
      stream_slots[size_t(r)][slots[i].stream].push_back(int(i));
  }
  std::map<std::tuple<int, int, int>, std::deque<Message>> mailbox;  // (comm, from, to) -> messages in order
  std::map<std::pair<int, int64_t>, std::vector<std::pair<int, int>>> arrived; // (comm, k-th) -> (rank, op)
  std::vector<std::map<int, int64_t>> coll_count(static_cast<size_t>(R));          // per rank: collectives posted per comm
  std::vector<std::map<int, int64_t>> slot_coll(static_cast<size_t>(R));           // slot -> its (comm, k) key's k
  int64_t remaining = 0;
  for (int r = 0; r < R; ++r)
    remaining += int64_t(done[size_t(r)].size());
  while (remaining > 0) {
    bool progress = false;
    for (int r = 0; r < R; ++r) {
      const RankExecPlan& rp = plan_.ranks[size_t(r)];
      for (auto& [stream, list] : stream_slots[size_t(r)]) {
        size_t& nx = next[size_t(r)][stream];
        while (nx < list.size()) {
          const int si = list[nx];
          const Slot& sl = rp.slots[size_t(si)];
          bool ready = true;
          for (int a : sl.wait_slots)
            ready = ready && done[size_t(r)][size_t(a)];
          if (!ready)
            break;
          const Op& first = op(r, sl.ops[0]);
          bool finished = true;
          if (first.kind == OpKind::SEND || first.kind == OpKind::RECV) {
            if (!posted[size_t(r)][size_t(si)]) {
              for (int id : sl.ops)
                if (op(r, id).kind == OpKind::SEND)
                  mailbox[{rp.comm_of_op[size_t(id)], r, op(r, id).peer}].push_back(pack(r, op(r, id)));
              posted[size_t(r)][size_t(si)] = true;
              progress = true;
            }
            std::map<std::tuple<int, int, int>, size_t> wanted; // a slot may receive twice from one peer
            for (int id : sl.ops)
              if (op(r, id).kind == OpKind::RECV)
                ++wanted[{rp.comm_of_op[size_t(id)], op(r, id).peer, r}];
            for (const auto& [key, n] : wanted)
              finished = finished && mailbox[key].size() >= n;
            if (finished)
              for (int id : sl.ops)
                if (op(r, id).kind == OpKind::RECV) {
                  auto& q = mailbox[{rp.comm_of_op[size_t(id)], op(r, id).peer, r}];
                  unpack(r, op(r, id), q.front());
                  q.pop_front();
                }
          } else if (first.kind == OpKind::COLLECTIVE) {
            if (sl.ops.size() != 1)
              throw UserError(op_where(r, first) + ": a collective posted with other ops is not emulated");
            const int comm = rp.comm_of_op[size_t(first.id)];
            if (!posted[size_t(r)][size_t(si)]) {
              const int64_t k = coll_count[size_t(r)][comm]++;
              slot_coll[size_t(r)][si] = k;
              arrived[{comm, k}].push_back({r, first.id});
              posted[size_t(r)][size_t(si)] = true;
              progress = true;
              auto& who = arrived[{comm, k}];
              if (who.size() == plan_.comms[size_t(comm)].ranks.size())
                collective(who);
            }
            const auto& who = arrived[{comm, slot_coll[size_t(r)][si]}];
            finished = who.size() == plan_.comms[size_t(comm)].ranks.size();
          } else {
            for (int id : sl.ops) {
              const Op& o = op(r, id);
              if (o.kind == OpKind::ATTENTION)
                attention(r, o);
              else if (o.kind == OpKind::MERGE)
                merge(r, o);
              else if (o.kind == OpKind::COMPUTE)
                compute(r, o);
            }
          }
          if (!finished)
            break;
          done[size_t(r)][size_t(si)] = true;
          --remaining;
          ++nx;
          progress = true;
        }
      }
    }
    if (!progress) {
      std::string where;
      for (int r = 0; r < R && where.empty(); ++r)
        for (auto& [stream, list] : stream_slots[size_t(r)])
          if (next[size_t(r)][stream] < list.size()) {
            const Op& o = op(r, plan_.ranks[size_t(r)].slots[size_t(list[next[size_t(r)][stream]])].ops[0]);
            where = op_where(r, o);
            break;
          }
      throw UserError("the plan cannot complete: " + where + " waits for a peer that never sends or arrives");
    }
  }
}

std::vector<EmulatedResult> Emulator::compare(const Reference& ref) const {
  std::vector<EmulatedResult> out;
  const bool backward = s_.pass == PassKind::FWD_BWD;
  for (const RankExecPlan& rp : plan_.ranks)
    for (const auto& [key, b] : rp.results) {
      if (!backward && key != "o" && key != "lse")
        continue;
      const BufferPlacement& bp = rp.buffers[size_t(b)];
      const auto& mem = mem_[size_t(rp.rank)][size_t(b)];
      const bool lse = key == "lse";
      const bool kv_side = key == "dk" || key == "dv" || key == "dkv";
      const int nh = kv_side ? ref.kv_heads : ref.heads;
      const int64_t hw = lse ? 1 : ref.dim;
      EmulatedResult res;
      res.rank = rp.rank;
      res.result = key;
      res.buffer = bp.name;
      const int planes = key == "dkv" ? 2 : 1;
      for (int plane = 0; plane < planes; ++plane) {
        const std::vector<double>& t = key == "o" ? ref.o : lse ? ref.lse : key == "dq" ? ref.dq
                                      : key == "dv" || plane == 1 ? ref.dv : ref.dk;
        int64_t row = 0;
        for (const TokenSlice& ts : bp.tokens)
          for (int64_t i = 0; i < ts.range.size(); ++i, ++row)
            for (int hp = 0; hp < bp.heads; ++hp)
              for (int64_t e = 0; e < hw; ++e) {
                const double want = t[size_t(((ref.seq_row[size_t(ts.seq)] + ts.range.at(i)) * nh + bp.head_ids[size_t(hp)]) * hw + e)];
                const double got = mem[size_t(plane * bp.rows * bp.width + row * bp.width + hp * bp.head_width + e)];
                const double err = want == got ? 0.0 : std::isfinite(want) && std::isfinite(got) ? std::abs(want - got) : INFINITY;
                if (err > res.max_abs_err)
                  res.worst = "sequence " + std::to_string(ts.seq) + " position " + std::to_string(ts.range.at(i)) + " head " +
                              std::to_string(bp.head_ids[size_t(hp)]) + " element " + std::to_string(e) + " plane " +
                              std::to_string(plane) + ": " + std::to_string(got) + " for " + std::to_string(want);
                res.max_abs_err = std::max(res.max_abs_err, err);
                if (std::isfinite(want))
                  res.max_abs_ref = std::max(res.max_abs_ref, std::abs(want));
                ++res.elements;
              }
      }
      out.push_back(res);
    }
  return out;
}

} // namespace

std::vector<EmulatedResult> emulate_plan(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const EmulationOptions& opt) {
  Emulator e(s, sc, plan, opt);
  e.run();
  return e.compare(reference(sc, s.pass == PassKind::FWD_BWD, opt.value_dims));
}

} // namespace cpsim::backend
