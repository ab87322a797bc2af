// Internal to exec_plan: buffer placement in the arena and collective pieces.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/model/execution_graph.hpp"

namespace cpsim::backend {

/** Fills rp.buffers, buffer_index, results, arena_bytes, predicted_peak_bytes, working_set_bytes. */
void place_buffers(const Schedule& s, const Workload& w, const ExecutionGraph& g, RankExecPlan& rp);
/** Fills every rank's collectives and staging_bytes (needs every rank's buffers). */
void plan_collectives(const Schedule& s, const Workload& w, ExecPlan& plan);

/** K and V travel together in these tensors (two planes). */
bool is_two_plane(const std::string& tensor);
bool is_lse(const std::string& tensor);
/** The tensor an accumulator accumulates ("dq_acc" -> "dq"); other names unchanged. */
std::string tensor_family(const std::string& tensor);
/** Whether `op` reads and writes `buffer`: it accumulates into it in place. */
bool in_place(const Op& op, const std::string& buffer);
/** Heads two buffers share, as runs consecutive in both rows (positions in each buffer's head list). */
struct HeadRun {
  int src_pos = 0, dst_pos = 0, n = 0;
};
std::vector<HeadRun> head_runs(const BufferPlacement& src, const BufferPlacement& dst);
/** The id of the position-addressed input values a buffer of `tensor` holds in `plane` (q 1, k 2, v 3, dO 4), else 0. */
int input_tensor_id(const std::string& tensor, int plane);
/** Buffers the run fills with inputs before it starts: q, k, v, kv or do buffers no op writes or allocates. */
std::vector<int> input_buffers(const RankProgram& p, const RankExecPlan& rp);
/** Row blocks where `src` and `dst` hold the same tokens, dst slices outer (the packing order of collectives). */
std::vector<RowBlock> shared_rows(const std::vector<TokenSlice>& src, const std::vector<TokenSlice>& dst);

} // namespace cpsim::backend
