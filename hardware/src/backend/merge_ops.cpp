// Forward merges planned by merge_plan.cpp: TE p2p's LSE fold and output correction (rows of one step's partial into
// the running fp64 LSE and the output), the n-way merge of CQS and DCP (the kernels' merge_lse per run of rows), and
// PIT's scatter-merge of the partials of packed query rows (gather_kernels.hpp).
#include "rank_executor.hpp"

#include "buffer_plan.hpp"
#include "gather_kernels.hpp"
#include "gpu_check.hpp"
#include "merge_kernels.hpp"

namespace cpsim::backend {

void RankExecutor::issue_forward_merge(const Op& op, const ForwardMerge& m, cudaStream_t st) {
  if (m.kind == ForwardMerge::PACKED) { // PIT along query rows: every output unit from its packed partials
    const UnitTables& tb = scatter_tables_.at(op.id);
    PackedPartialMerge a;
    a.o_part = static_cast<const char*>(ptr(m.part_o));
    a.lse_part = static_cast<const float*>(ptr(m.part_lse));
    a.o = static_cast<char*>(ptr(m.out));
    a.lse = static_cast<float*>(ptr(m.lse_out));
    a.head_dim = sc_.workload.head_dim;
    a.unit_heads = tb.unit_heads;
    a.unit_o = tb.unit_dst;
    a.unit_lse = tb.unit_lse;
    a.copy_begin = tb.copy_begin;
    a.copy_src = tb.copy_src;
    a.units = tb.units;
    merge_packed_partials(a, st);
    return;
  }
  if (m.kind == ForwardMerge::NWAY) {
    auto at = [&](int b, int64_t row) {
      const BufferPlacement& bp = rp_.buffers[size_t(b)];
      return HeadBlock{static_cast<char*>(ptr(b)) + row * bp.row_bytes(), bp.head_begin, bp.heads, bp.elem_bytes};
    };
    for (const ForwardMerge::Run& run : m.runs) {
      MergeCall c;
      c.rows = run.rows;
      c.head_begin = op.head_begin;
      c.head_end = op.head_end;
      c.head_dim = sc_.workload.head_dim;
      c.stream = st;
      for (const ForwardMerge::Input& in : run.inputs) {
        c.o_in.push_back(at(in.o, in.row));
        c.lse_in.push_back(at(in.lse, in.row));
      }
      c.o_out = at(m.out, run.row);
      c.lse_out = at(m.lse_out, run.row);
      merge_partials(c);
    }
    return;
  }
  const BufferPlacement& acc = rp_.buffers[size_t(m.acc)];
  const BufferPlacement& pl = rp_.buffers[size_t(m.part_lse)];
  if (m.kind == ForwardMerge::LSE_FOLD) {
    if (m.first) // the running LSE starts from "no keys"
      fill_neg_inf(ptr(m.acc), acc.elem_bytes, acc.rows * acc.heads, st);
    for (const RowBlock& b : m.blocks)
      lse_fold(ptr(m.acc), acc.elem_bytes, static_cast<const float*>(ptr(m.part_lse)), b.src_row, b.src_step, b.dst_row,
               b.dst_step, b.rows, acc.heads, st);
    return;
  }
  const BufferPlacement &out = rp_.buffers[size_t(m.out)], &po = rp_.buffers[size_t(m.part_o)];
  if (m.first) // every step adds its share: the output starts at zero
    BK_CUDA_CHECK(cudaMemsetAsync(ptr(m.out), 0, size_t(out.bytes), st));
  for (const RowBlock& b : m.blocks)
    out_correction(ptr(m.out), out.elem_bytes, ptr(m.part_o), po.elem_bytes, static_cast<const float*>(ptr(m.part_lse)),
                   ptr(m.acc), acc.elem_bytes, b.src_row, b.src_step, b.dst_row, b.dst_step, b.rows, pl.heads,
                   sc_.workload.head_dim, st);
  if (m.lse_out >= 0) // the last step hands on the running LSE as the output's
    lse_to_f32(static_cast<float*>(ptr(m.lse_out)), ptr(m.acc), acc.elem_bytes, acc.rows * acc.heads, st);
}

} // namespace cpsim::backend
