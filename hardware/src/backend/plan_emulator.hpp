// A CPU emulator of exec plans: every rank's slots run in fp64 on host memory with the executor's own semantics
// (the same exec plan, launch tensors, kernel plans, gather/scatter tables, message pieces and collective pieces),
// the cells the kernels compute taken from their plans and masks, NCCL's in-order matching per communicator, and
// streams that wait on each other's slots. The results are compared with attention in fp64 under the workload's
// mask. What it checks is the plan's data movement and arithmetic; the CUDA kernels and transports are checked on
// GPUs (`cpsim run --check`). Needs the kernels' planner (built with CUDA).
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/model/scenario.hpp"

#include <string>
#include <vector>

namespace cpsim::backend {

/** One result buffer of one rank against the fp64 reference. */
struct EmulatedResult {
  int rank = 0;
  std::string result; // o, lse, dq, dk, dv, dkv
  std::string buffer;
  int64_t elements = 0;   // compared
  double max_abs_err = 0; // |emulated - reference|, largest
  double max_abs_ref = 0; // |reference|, largest (scale of the error)
  std::string worst;      // where the largest error is: sequence, position, head, element (and plane)
};

struct EmulationOptions {
  int value_dims = 8; // inputs are nonzero in the first value_dims elements of every head (the rest 0): cheaper
};

/** The emulator's inputs: a deterministic value in [-1, 1) per (tensor: q 1, k 2, v 3, dO 4; sequence, position,
 *  head, element), 0 past element `dims`. */
double emulated_input(int tensor, int seq, int64_t pos, int head, int64_t e, int dims);

/**
 * Runs `plan` (made from `s` for `sc`) on the CPU and compares every rank's results. Throws UserError when the plan
 * cannot complete (a receive without its send, a collective some member never reaches: named).
 */
std::vector<EmulatedResult> emulate_plan(const Schedule& s, const Scenario& sc, const ExecPlan& plan,
                                         const EmulationOptions& opt = {});

} // namespace cpsim::backend
