// `cpsim run --check`: is the CP schedule's answer the answer? Every rank recomputes plain
// single-GPU attention over the whole workload (inputs come from the same position-addressed
// generator, so no rank needs another's data) and compares the result buffers it holds (o, lse,
// dq, dk, dv) with the matching rows and heads of that reference. The reference uses the same
// tensor-core kernels, which the kernel tests hold against an fp64 CPU reference; what the check
// measures is therefore what the schedule adds: splitting, moving, merging and accumulating.
#pragma once

#include "rank_executor.hpp"

#include "cpsim/model/json_reader.hpp"

namespace cpsim::backend {

/** Relative L2 error beyond which a result fails (bf16 inputs and outputs, fp32 accumulation). */
constexpr double kCheckRelTolerance = 1e-2;

/** {"o": {"rel_l2", "max_abs", "ok"}, ...} for each result buffer of the rank; throws GpuError when the reference does not fit. */
Json check_results(const RankExecutor& ex, const Schedule& s, const Scenario& sc);

} // namespace cpsim::backend
